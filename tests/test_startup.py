"""Start-up: the packages py-libp2p imports for features a node never uses are not run."""

import subprocess
import sys

PROBE = """
import importlib.util, sys
from bzzz import lazy_imports
lazy_imports.install()
import bzzz.node  # what `bzzz run` imports
def lazy(name):
    return type(sys.modules.get(name)) is importlib.util._LazyModule
print(lazy("service_identity"), lazy("httpx"))
import httpx  # first use runs it, whole
print(httpx.AsyncClient.__name__, lazy("httpx"))
"""


def probe(code: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.split("\n")


def test_unused_packages_are_imported_but_not_run_until_used():
    deferred, used = probe(PROBE)[:2]
    assert deferred == "True True", "imported by libp2p, not run"
    assert used == "AsyncClient False", "run on first use"


def test_without_the_hook_they_run_at_import():
    without = PROBE.replace("lazy_imports.install()", "")
    assert probe(without)[0] == "False False"
