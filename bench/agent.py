"""The agent's overhead per turn, the model excluded, and what a task costs in requests and
tokens, on the scripted scenario of the end-to-end test (a failing test in a small project:
list, read, run the tests, edit, run them again, finish; then `test_command`).

Printed against references measured in the same run:
- a sandboxed command (bubblewrap + prlimit) against the same command started plainly;
- a file tool against reading the file directly;
- a whole agent turn against the bare chat request to the same scripted server (the model's
  share): what is left is the agent's bookkeeping and its tools.

Run from the repository root:  python -m bench.agent [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bzzz.agent.loop import Agent, Transcript, system_prompt, task_prompt
from bzzz.agent.tools import ToolBox
from bzzz.llm import Llm
from bzzz.sandbox import Sandbox
from bzzz.tasks.executor import run_command
from tests.fakes.model import ScriptedModel, call

CALC = "def add(a, b):\n    return a - b\n"
TEST = (
    "import unittest\n\nfrom calc import add\n\n\n"
    "class AddTest(unittest.TestCase):\n"
    "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n"
)
TESTS = ["python3", "-m", "unittest", "-q"]


def scenario() -> list:
    return [
        call("list_files"),
        call("read_file", path="calc.py"),
        call("run", command="python3 -m unittest -q"),
        call("edit_file", path="calc.py", old_text="return a - b", new_text="return a + b"),
        call("run", command="python3 -m unittest -q"),
        call("finish", summary="add() subtracted; it adds now."),
    ]


def project(root: Path) -> Path:
    tree = root / "tree"
    tree.mkdir(parents=True)
    (tree / "calc.py").write_text(CALC)
    (tree / "test_calc.py").write_text(TEST)
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    return tree


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:8.2f} ms"


async def timed(runs: int, action) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await action()
        samples.append(time.perf_counter() - started)
    return samples


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bzzz-bench-agent-") as tmp:
        root = Path(tmp)
        tree = project(root)
        env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}
        sandbox = Sandbox("bubblewrap", [root / "state"])
        problem = await sandbox.problem(root / "probe")
        assert problem is None, problem

        async def plain() -> None:
            await run_command(["true"], None, tree, env, 30)

        async def boxed() -> None:
            await run_command(["true"], None, tree, env, 30, sandbox)

        async def tests_plain() -> None:
            await run_command(TESTS, None, tree, env, 30)

        async def tests_boxed() -> None:
            await run_command(TESTS, None, tree, env, 30, sandbox)

        start_plain, start_boxed = await timed(runs, plain), await timed(runs, boxed)
        tests_p, tests_b = await timed(runs, tests_plain), await timed(runs, tests_boxed)
        print(
            f"sandbox ({'private' if sandbox.private_proc else 'shared'} /proc), median of {runs}"
        )
        print(
            f"  start `true`         plain {ms(start_plain)}   sandboxed {ms(start_boxed)}", end=""
        )
        print(
            f"   +{(statistics.median(start_boxed) - statistics.median(start_plain)) * 1000:.1f} ms"
        )
        print(f"  run the tests        plain {ms(tests_p)}   sandboxed {ms(tests_b)}", end="")
        print(f"   x{statistics.median(tests_b) / statistics.median(tests_p):.2f}")

        tools = ToolBox(tree, lambda command, limit: asyncio.sleep(0, (0, "")))
        direct = await timed(runs * 10, lambda: asyncio.to_thread((tree / "calc.py").read_text))
        read = await timed(runs * 10, lambda: tools.call("read_file", '{"path": "calc.py"}'))
        search = await timed(runs * 10, lambda: tools.call("search", '{"pattern": "add"}'))
        listed = await timed(runs * 10, lambda: tools.call("list_files", "{}"))
        print("file tools, median")
        print(f"  read the file directly {ms(direct)}")
        print(f"  read_file {ms(read)}   search {ms(search)}   list_files {ms(listed)}")

        spent = {"model": 0.0, "commands": 0.0}

        class TimedLlm(Llm):
            async def chat(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                started = time.perf_counter()
                try:
                    return await super().chat(*args, **kwargs)
                finally:
                    spent["model"] += time.perf_counter() - started

        async def sandboxed(argv: list[str], limit: float) -> tuple[int | None, str]:
            started = time.perf_counter()
            run = await run_command(argv, None, tree, env, limit, sandbox)
            spent["commands"] += time.perf_counter() - started
            return run.exit_code, run.output

        totals, shares, turns, requests, tokens = [], [], [], [], []
        for n in range(runs):
            (tree / "calc.py").write_text(CALC)
            spent.update(model=0.0, commands=0.0)
            with ScriptedModel(scenario()) as model:
                llm = TimedLlm(model.url, None, 30)
                agent = Agent(
                    llm,
                    "coder-7b",
                    ToolBox(tree, lambda command, limit: sandboxed(["sh", "-c", command], limit)),
                    Transcript(root / f"t{n}.jsonl"),
                    40,
                    200_000,
                    lambda: sandboxed(TESTS, 60),
                    " ".join(TESTS),
                )
                task = {"number": 1, "repository": "acme/widgets", "title": "add() is wrong"}
                prompt = task_prompt(task, "", [], tree)
                started = time.perf_counter()
                result = await agent.run(system_prompt("agent-bench", "tests"), prompt)
                totals.append(time.perf_counter() - started)
                await llm.close()
            assert result.finished and result.tests == "passed", result
            shares.append(dict(spent))
            turns.append(result.turns)
            requests.append(len(model.requests))
            tokens.append(result.tokens)
        total = statistics.median(totals)
        model_s = statistics.median(s["model"] for s in shares)
        commands_s = statistics.median(s["commands"] for s in shares)
        rest = total - model_s - commands_s
        print(f"the scripted task (6 turns: 2 sandboxed runs, then the tests), median of {runs}")
        print(
            f"  per task: {total * 1000:.0f} ms, {turns[0]} turns, {requests[0]} chat requests, "
            f"{tokens[0]} tokens (the server's usage counts)"
        )
        print(
            f"  of which: the model (HTTP to the scripted server) {model_s * 1000:.0f} ms, "
            f"sandboxed commands {commands_s * 1000:.0f} ms, "
            f"the agent's bookkeeping and file tools {rest * 1000:.1f} ms"
        )
        print(
            f"  per turn, the model excluded: {(total - model_s) / turns[0] * 1000:.1f} ms "
            f"({(commands_s) / turns[0] * 1000:.1f} ms sandboxed commands, "
            f"{rest / turns[0] * 1000:.2f} ms the rest)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    asyncio.run(main(parser.parse_args().runs))
