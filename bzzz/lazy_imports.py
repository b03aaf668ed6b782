"""Defer the import of packages py-libp2p pulls in for features a node never uses.

py-libp2p imports its AutoTLS ACME client (requests, httpx) and its TLS transport's certificate
checks (service_identity) at `import libp2p`. Each of them is imported here as a module whose
code runs on first use (the standard library's `importlib.util.LazyLoader`, the recipe in the
importlib documentation): a node that never uses them never runs them; one that does (PyGithub
uses requests, the model client httpx) pays on first use, exactly as before.

Only the daemon installs this (`bzzz run`), before it imports libp2p.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

# Top-level packages that only unused features import at start. Imported with `import x` by
# those features (a `from x import y` would run x at once, lazy or not).
# (dnspython is not among them: multiaddr runs it at import anyway.) Python 3.11's LazyLoader
# is not safe against two threads touching a module first at once: these are first touched,
# if ever, by imports on the main thread (PyGithub's, the model client's).
DEFERRED = frozenset({"requests", "httpx", "service_identity"})


class _LazyFinder(importlib.abc.MetaPathFinder):
    """Finds DEFERRED packages (and their submodules) with the other finders and gives them
    a lazy loader."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] not in DEFERRED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = importlib.util.LazyLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Install once, first in line."""
    if not any(isinstance(finder, _LazyFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _LazyFinder())
