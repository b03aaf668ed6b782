"""What the agent can do in its work tree: list, read, search, write and edit files, run a
command (in the sandbox), and finish. Every path stays inside the work tree; every output is
capped, with a note saying so, because a model's context is not a place for megabytes."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTPUT_CHARS = 12_000  # of any one tool's answer
MAX_LIST = 400
MAX_MATCHES = 200
MAX_READ_LINES = 600
SKIPPED_DIRS = {".git", "node_modules", "__pycache__", ".venv"}

RunInSandbox = Callable[[str, float], Awaitable[tuple[int | None, str]]]
"""(shell command, time limit) -> (exit status, None on timeout; output)."""


class ToolError(Exception):
    """The call cannot be done as asked; the model is told why and may try again."""


@dataclass(frozen=True)
class Finish:
    summary: str


def schema(name: str, description: str, **params: tuple[str, str, bool]) -> dict[str, Any]:
    """An OpenAI function tool: params are (JSON type, description, required)."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {
                    key: {"type": kind, "description": text}
                    for key, (kind, text, _) in params.items()
                },
                "required": [key for key, (_, _, required) in params.items() if required],
            },
        },
    }


TOOLS = [
    schema(
        "list_files",
        "List the files under a directory of the repository (recursively).",
        path=("string", "directory, relative to the repository root (default .)", False),
    ),
    schema(
        "read_file",
        "Read a file, with line numbers; give a range for long files.",
        path=("string", "file, relative to the repository root", True),
        start_line=("integer", "first line (1-based, default 1)", False),
        end_line=("integer", "last line (default: the end, at most 600 lines)", False),
    ),
    schema(
        "search",
        "Search the repository's files for text (or a regular expression).",
        pattern=("string", "what to look for", True),
        regex=("boolean", "treat pattern as a Python regular expression", False),
        path=("string", "directory to search (default .)", False),
    ),
    schema(
        "write_file",
        "Create a file (or replace its whole content).",
        path=("string", "file, relative to the repository root", True),
        content=("string", "the whole new content", True),
    ),
    schema(
        "edit_file",
        "Replace one exact occurrence of old_text with new_text in a file.",
        path=("string", "file, relative to the repository root", True),
        old_text=("string", "text to replace: must occur exactly once", True),
        new_text=("string", "replacement", True),
    ),
    schema(
        "run",
        "Run a shell command in the repository (sandboxed, no network unless allowed).",
        command=("string", "the command, run with sh -c", True),
        timeout_s=("integer", "time limit in seconds (default 120)", False),
    ),
    schema(
        "finish",
        "Say you are done: summarise what you changed and why (or what you found).",
        summary=("string", "what you did, for the pull request and the issue", True),
    ),
]


def cap(text: str, limit: int = OUTPUT_CHARS) -> str:
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    cut = len(text) - limit
    return f"{text[:head]}\n[… {cut} characters cut: ask for less …]\n{text[-tail:]}"


class ToolBox:
    def __init__(self, root: Path, run: RunInSandbox, command_timeout: float = 120.0) -> None:
        self.root = root.resolve()
        self._run = run
        self._command_timeout = command_timeout
        self.commands_run = 0

    async def call(self, name: str, arguments: str) -> str | Finish:
        """Do one tool call; its answer (capped), or Finish. Raises ToolError."""
        try:
            args = json.loads(arguments or "{}")
        except ValueError:
            problem = f"the arguments of {name} are not valid JSON: {arguments[:200]!r}"
            raise ToolError(problem) from None
        if not isinstance(args, dict):
            raise ToolError(f"the arguments of {name} must be a JSON object")
        try:
            if name == "finish":
                return Finish(str(args.get("summary") or "").strip() or "(no summary)")
            if name == "run":
                return await self._run_command(str(args["command"]), args.get("timeout_s"))
            handler = _HANDLERS.get(name)
            if handler is None:
                raise ToolError(f"there is no tool {name!r}; use one of the tools given")
            return cap(await asyncio.to_thread(handler, self, args))
        except KeyError as missing:
            raise ToolError(f"{name} needs the argument {missing}") from None
        except (OSError, UnicodeDecodeError, re.error, TypeError, ValueError) as exc:
            raise ToolError(f"{name} failed: {type(exc).__name__}: {exc}") from None

    def _path(self, relative: Any, must_exist: bool = True) -> Path:
        path = (self.root / str(relative or ".")).resolve()
        if not path.is_relative_to(self.root):
            raise ToolError(f"{relative}: outside the repository")
        if path.is_relative_to(self.root / ".git"):
            raise ToolError(f"{relative}: .git is not for editing")
        if must_exist and not path.exists():
            raise ToolError(f"{relative}: no such file or directory")
        return path

    def _list(self, args: dict[str, Any]) -> str:
        base = self._path(args.get("path"))
        found: list[str] = []
        for directory, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            for name in sorted(files):
                found.append(str((Path(directory) / name).relative_to(self.root)))
                if len(found) >= MAX_LIST:
                    return "\n".join(found) + "\n[… more files: list a subdirectory]"
        return "\n".join(found) or "(no files)"

    def _read(self, args: dict[str, Any]) -> str:
        path = self._path(args["path"])
        lines = path.read_text(encoding="utf-8").splitlines()
        start = max(1, int(args.get("start_line") or 1))
        end = min(len(lines), int(args.get("end_line") or len(lines)), start + MAX_READ_LINES - 1)
        numbered = [f"{n:5d}  {lines[n - 1]}" for n in range(start, end + 1)]
        more = f"\n[… lines {end + 1}-{len(lines)} not shown]" if end < len(lines) else ""
        return "\n".join(numbered) + more if numbered else "(empty)"

    def _search(self, args: dict[str, Any]) -> str:
        pattern = str(args["pattern"])
        matcher = re.compile(pattern) if args.get("regex") else None
        matches: list[str] = []
        for directory, dirs, files in os.walk(self._path(args.get("path"))):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            for name in sorted(files):
                path = Path(directory) / name
                try:
                    text = path.read_text(encoding="utf-8")
                except (UnicodeDecodeError, OSError):
                    continue
                for number, line in enumerate(text.splitlines(), 1):
                    if matcher.search(line) if matcher else pattern in line:
                        matches.append(f"{path.relative_to(self.root)}:{number}: {line[:200]}")
                        if len(matches) >= MAX_MATCHES:
                            return "\n".join(matches) + "\n[… more matches: narrow the search]"
        return "\n".join(matches) or "(no matches)"

    def _write(self, args: dict[str, Any]) -> str:
        path = self._path(args["path"], must_exist=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        content = str(args["content"])
        path.write_text(content, encoding="utf-8")
        return f"wrote {path.relative_to(self.root)} ({len(content)} characters)"

    def _edit(self, args: dict[str, Any]) -> str:
        path = self._path(args["path"])
        text = path.read_text(encoding="utf-8")
        old, new = str(args["old_text"]), str(args["new_text"])
        count = text.count(old) if old else 0
        if count != 1:
            raise ToolError(
                f"old_text occurs {count} times in {args['path']}: it must occur exactly once "
                "(read the file and copy the text exactly, with a line or two around it)"
            )
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        return f"edited {path.relative_to(self.root)}"

    async def _run_command(self, command: str, asked: Any) -> str:
        limit = float(asked) if isinstance(asked, int | float) and asked > 0 else 0
        limit = min(limit or self._command_timeout, self._command_timeout * 5)
        self.commands_run += 1
        code, output = await self._run(command, limit)
        status = "timed out" if code is None else f"exit status {code}"
        return cap(f"[{status}]\n{output}")


_HANDLERS: dict[str, Callable[[ToolBox, dict[str, Any]], str]] = {
    "list_files": ToolBox._list,
    "read_file": ToolBox._read,
    "search": ToolBox._search,
    "write_file": ToolBox._write,
    "edit_file": ToolBox._edit,
}
