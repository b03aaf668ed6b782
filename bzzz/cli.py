"""The `bzzz` command: `run` is the daemon; the rest are thin clients or offline tools.

Exit codes: 0 success, 1 runtime failure, 2 usage or config error, 3 no daemon answering.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bzzz import __version__
from bzzz import config as config_module
from bzzz.config import ConfigError, LoadedConfig

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
FOLLOW_POLL_S = 0.5


def _error(message: str) -> None:
    # Under systemd the line goes to the journal: give it error priority there.
    prefix = "<3>" if "JOURNAL_STREAM" in os.environ else ""
    print(f"{prefix}bzzz: {message}", file=sys.stderr)


def _load(args: argparse.Namespace) -> LoadedConfig:
    return config_module.load(args.config)


# ---- the daemon -----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    loaded = _load(args)
    config_module.check_files(loaded)
    # Imported here: the client commands need not pay for importing libp2p.
    from bzzz import logs
    from bzzz.control import AlreadyRunning
    from bzzz.node import Node
    from bzzz.p2p import IdentityError, load_or_create
    from bzzz.p2p.identity import key_file_too_open

    node_config = loaded.config.node
    logs.configure(
        args.log_level or node_config.log_level,
        args.log_format or node_config.log_format,
        os.environ,
    )
    import structlog

    log = structlog.get_logger("bzzz")
    from bzzz import statelock

    try:
        statelock.hold(loaded.paths.state_dir)  # held until the process ends
    except (statelock.StateDirInUse, OSError) as exc:
        log.error("state_dir_unavailable", error=str(exc))
        return EXIT_FAILURE
    try:
        identity, created = load_or_create(loaded.paths.state_dir)
    except (IdentityError, OSError) as exc:
        log.error("identity_unavailable", error=str(exc))
        return EXIT_FAILURE
    if created:
        log.info("identity_created", peer_id=identity.peer_id, path=str(identity.path))
    elif key_file_too_open(identity):
        log.warning("identity_key_file_too_open", path=str(identity.path), expected_mode="0600")

    async def main() -> None:
        await Node(loaded, identity, os.environ).run()

    try:
        asyncio.run(main())
    except Exception as exc:
        for failure in _leaves(exc):
            # Operational faults (a taken port, a second daemon) need one clear line, bugs a
            # traceback.
            expected = isinstance(failure, OSError | AlreadyRunning)
            log.error(
                "node_failed",
                error=f"{type(failure).__name__}: {failure}",
                exc_info=None if expected else failure,
            )
        return EXIT_FAILURE
    return EXIT_OK


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


# ---- offline tools --------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    loaded = _load(args)
    from bzzz.p2p import IdentityError, load_or_create

    try:
        identity, created = load_or_create(loaded.paths.state_dir)
    except (IdentityError, OSError) as exc:
        _error(str(exc))
        return EXIT_FAILURE
    if args.json:
        _print_json({"peer_id": identity.peer_id, "path": str(identity.path), "created": created})
    else:
        verb = "created" if created else "exists"
        print(f"{identity.peer_id}\n(key {verb}: {identity.path})")
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    loaded = config_module.load(args.path or args.config)
    config_module.check_files(loaded)
    source = loaded.source or f"{config_module.DEFAULT_CONFIG_PATH} (absent: all defaults)"
    if args.json:
        _print_json({"ok": True, "source": str(source), "config": loaded.config.model_dump()})
    else:
        print(f"ok: {source}")
    return EXIT_OK


def cmd_version(args: argparse.Namespace) -> int:
    print(__version__)
    return EXIT_OK


# ---- the audit log, read from disk ----------------------------------------------------------


def _log_scope(args: argparse.Namespace) -> tuple[Path, list[str]]:
    """The log directory and the authors to show: --author, else our own, else all."""
    from bzzz.auditlog import reader
    from bzzz.p2p import load_existing

    paths = _load(args).paths
    root = reader.log_root(paths.state_dir)
    if getattr(args, "author", None):
        return root, [args.author]
    own = load_existing(paths.state_dir)
    if own is not None and own.peer_id in reader.authors(root):
        return root, [own.peer_id]
    return root, reader.authors(root)


def _entry_line(signed: Any, as_json: bool) -> str:
    entry = signed.entry
    if as_json:
        return json.dumps({**entry.fields(), "hash": signed.hash}, sort_keys=True)
    data = json.dumps(entry.data, sort_keys=True, ensure_ascii=False)
    return f"{entry.seq:>6}  {entry.timestamp}  {entry.author[-6:]}  {entry.type:<20} {data}"


def cmd_log_show(args: argparse.Namespace) -> int:
    from bzzz.auditlog import reader

    root, authors = _log_scope(args)
    for author in authors:
        store, _ = reader.open_chain(root, author)
        for signed in reader.entries(store, since=args.since):
            if args.type is None or signed.entry.type == args.type:
                print(_entry_line(signed, args.json))
    return EXIT_OK


def cmd_log_verify(args: argparse.Namespace) -> int:
    from bzzz.auditlog import reader
    from bzzz.p2p import verify

    root = reader.log_root(_load(args).paths.state_dir)
    heads, findings = reader.verify(root, verify)
    if args.json:
        _print_json(
            {
                "ok": not findings,
                "heads": heads,
                "problems": [
                    {"author": f.author, "seq": f.problem.seq, "reason": f.problem.reason}
                    for f in findings
                ],
            }
        )
    else:
        bad = {f.author for f in findings}
        for author, head in heads.items():
            print(f"{'FAIL' if author in bad else 'ok  '}  {author}  {head} entries")
        for finding in findings:
            print(f"      {finding.author} seq {finding.problem.seq}: {finding.problem.reason}")
    if findings:
        first = findings[0]
        _error(f"log verify: {first.author} seq {first.problem.seq}: {first.problem.reason}")
        return EXIT_FAILURE
    return EXIT_OK


def cmd_log_follow(args: argparse.Namespace) -> int:
    from bzzz.auditlog import reader

    root, authors = _log_scope(args)
    stores, next_seq = {}, {}
    for author in authors:
        stores[author], scan = reader.open_chain(root, author)
        next_seq[author] = max(1, scan.head_seq - 9)  # the last ten, then what lands
    try:
        while True:
            for author, store in stores.items():
                store.refresh()
                for signed in reader.entries(store, since=next_seq[author]):
                    if args.type is None or signed.entry.type == args.type:
                        print(_entry_line(signed, args.json), flush=True)
                    next_seq[author] = signed.entry.seq + 1
            time.sleep(FOLLOW_POLL_S)
    except KeyboardInterrupt:
        return EXIT_OK


# ---- clients of the control socket ----------------------------------------------------------


def _ask(args: argparse.Namespace, command: str) -> Any:
    from bzzz import control

    return control.request(_load(args).paths.control_socket, command)


def cmd_status(args: argparse.Namespace) -> int:
    status = _ask(args, "status")
    if args.json:
        _print_json(status)
        return EXIT_OK
    print(f"peer id:    {status['peer_id']}")
    print(f"agent id:   {status['agent_id']}")
    print(f"version:    {status['version']}")
    print(f"network:    {status['network_id']}")
    print(f"uptime:     {_duration(status['uptime_s'])}")
    for i, addr in enumerate(status["listen"]):
        print(f"{'listen:' if i == 0 else '':<12}{addr}")
    counts = status["peer_counts"]
    print(f"peers:      {counts['connected']} connected, {counts['known']} known")
    if status["peers"]:
        _print_peer_table(status["peers"])
    executor = (status.get("tasks") or {}).get("executor")
    if executor:
        print(f"executor:   {_executor_line(executor)}")
    stats = status["messages"]
    print("messages:")
    for topic, counts in stats["topics"].items():
        print(f"  {topic:<30} " + " ".join(f"{k}={v}" for k, v in counts.items()))
    refused = {k: v for k, v in stats["rejected"].items() if v}
    print(
        "  refused:  "
        + (" ".join(f"{k}={v}" for k, v in refused.items()) if refused else "none")
        + "  dropped="
        + ",".join(f"{k}:{v}" for k, v in stats["dropped_by"].items())
        + f"  stream_errors={stats['stream_errors']}"
    )
    return EXIT_OK


def _executor_line(executor: dict[str, Any]) -> str:
    line = str(executor["kind"]) + (f" ({executor['model']})" if executor["model"] else "")
    if executor["sandbox"] == "none":
        line += ", NO SANDBOX (executor.sandbox = none)"
    else:
        network = "network on" if executor["sandbox_network"] else "network off"
        proc = "" if executor["sandbox_private_proc"] else ", the service's /proc"
        line += f", sandbox {executor['sandbox']} ({network}{proc})"
    if executor["problem"]:
        line += f"; takes no tasks: {executor['problem']}"
    return line


def _show_transcript(args: argparse.Namespace) -> int:
    """The newest transcript of TASK in this node's state dir, read from disk."""
    if not args.task or "#" not in args.task:
        _error("--transcript needs a task: owner/repo#n")
        return EXIT_USAGE
    directory = _load(args).paths.state_dir / "transcripts"
    prefix = args.task.replace("/", "__") + "-"
    try:
        found = sorted(
            (p for p in directory.glob("*.jsonl") if p.name.startswith(prefix)),
            key=lambda p: p.stat().st_mtime,
        )
    except OSError as exc:
        _error(f"cannot read {directory}: {exc.strerror}")
        return EXIT_FAILURE
    if not found:
        _error(f"no transcript of {args.task} in {directory}")
        return EXIT_FAILURE
    entries = [json.loads(line) for line in found[-1].read_text().splitlines() if line.strip()]
    if args.json:
        _print_json(entries)
        return EXIT_OK
    for entry in entries:
        kind = entry["kind"]
        if kind == "assistant":
            calls = ", ".join(f"{c['name']}({c['arguments'][:80]})" for c in entry["tool_calls"])
            text = entry["content"] or ""
            print(f"[{entry['at']}] model (turn {entry['turn']}): {text[:300]}{calls}")
        elif kind == "tool":
            print(f"[{entry['at']}] {entry['name']} ->\n{entry['output'][:2000]}")
        elif kind == "tests":
            print(f"[{entry['at']}] tests `{entry['command']}`: exit {entry['exit']}")
        else:
            print(f"[{entry['at']}] {kind}: {str(entry.get('content') or entry)[:2000]}")
    return EXIT_OK


def cmd_tasks(args: argparse.Namespace) -> int:
    if args.transcript:
        return _show_transcript(args)
    tasks = _ask(args, "tasks")
    if args.task:
        tasks = [t for t in tasks if t["task"] == args.task]
    if args.json:
        _print_json(tasks)
        return EXIT_OK
    if not tasks:
        print("no tasks known")
        return EXIT_OK
    rows = [("TASK", "PHASE", "HOLDER", "HEARD", "TITLE")]
    for t in tasks:
        holder = t["holder_agent"] or (t["holder"][-6:] if t["holder"] else "-")
        heard = "-" if t["heard_s"] is None else f"{_duration(t['heard_s'])} ago"
        rows.append(
            (
                t["task"],
                t["phase"],
                holder + (" (here)" if t["held_here"] else ""),
                heard,
                t["title"][:50],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return EXIT_OK


def cmd_discuss(args: argparse.Namespace) -> int:
    from bzzz import control

    rows = control.request(_load(args).paths.control_socket, "discuss", {"task": args.task or ""})
    if args.json:
        _print_json(rows)
        return EXIT_OK
    if not rows:
        print("no conversations" + (f" about {args.task}" if args.task else ""))
    for row in rows:
        print(
            f"{row['task']}  {row['state']}  round {row['rounds']}  "
            f"proposer {row['proposer'][-6:] or '-'}{'  (task done)' if row['done'] else ''}"
        )
        if row["plan"]:
            print(f"    plan: {row['plan'][:200]}")
        for objection in row["open_objections"]:
            print(f"    open objection from {objection['by'][-6:]}: {objection['reason']}")
        if row["helpers"]:
            print("    helpers: " + ", ".join(f"{p[-6:]} ({w})" for p, w in row["helpers"].items()))
        for entry in row.get("history", []):
            print(
                f"    {entry['at'][11:19]}  {entry['from'][-6:]}  {entry['type']:<14} "
                f"{entry['text'][:120]}"
            )
    return EXIT_OK


def cmd_peers(args: argparse.Namespace) -> int:
    peers = _ask(args, "peers")
    if args.json:
        _print_json(peers)
    elif peers:
        _print_peer_table(peers)
    else:
        print("no peers")
    return EXIT_OK


def _print_peer_table(peers: list[dict[str, Any]]) -> None:
    rows = [("PEER", "AGENT", "CAPABILITIES", "STATUS", "LAST SEEN", "STATE")]
    for p in peers:
        state = "stale" if p["stale"] else "connected" if p["connected"] else "disconnected"
        rows.append(
            (
                p["peer_id"],
                p["agent_id"] or "-",
                ",".join(p["capabilities"]) or "-",
                p["status"] if p.get("works", True) else f"{p['status']} (cannot work)",
                f"{_duration(p['last_seen_s'])} ago",
                state,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    print()


# ---- argument parsing -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    config_help = f"config file (default: $BZZZ_CONFIG, else {config_module.DEFAULT_CONFIG_PATH})"
    parser = argparse.ArgumentParser(prog="bzzz", description=__doc__)
    parser.add_argument("--config", metavar="PATH", help=config_help)
    # `--config` is also taken after the command (`bzzz run --config PATH`, as the unit has it);
    # SUPPRESS keeps an absent one from hiding the one given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help=config_help, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str,
        handler: Callable[[argparse.Namespace], int],
        help: str,
        json_flag: bool = False,
        parent: Any = commands,
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(
            name, help=help, description=help, parents=[common]
        )
        sub.set_defaults(handler=handler)
        if json_flag:
            sub.add_argument("--json", action="store_true", help="machine-readable output")
        return sub

    run = add("run", cmd_run, "run the daemon in the foreground")
    run.add_argument("--log-format", choices=["console", "json"], help="override node.log_format")
    run.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="override node.log_level"
    )
    add("status", cmd_status, "show the running node's state", json_flag=True)
    add("peers", cmd_peers, "show the running node's peer table", json_flag=True)
    tasks = add(
        "tasks", cmd_tasks, "show the tasks this node knows: phase, holder, lease", json_flag=True
    )
    tasks.add_argument("task", nargs="?", help="one task (owner/repo#n)")
    tasks.add_argument(
        "--transcript",
        action="store_true",
        help="the agent's transcript of the task's latest run here (read from the state dir)",
    )
    discuss = add(
        "discuss", cmd_discuss, "show Antennae conversations and their state", json_flag=True
    )
    discuss.add_argument("task", nargs="?", help="one conversation (owner/repo#n), with history")
    add("init", cmd_init, "create the node key (if missing) and print the peer id", json_flag=True)
    add("version", cmd_version, "print the version")
    config_parser = commands.add_parser("config", help="configuration tools")
    config_commands = config_parser.add_subparsers(
        dest="config_command", required=True, metavar="COMMAND"
    )
    check = add(
        "check",
        cmd_config_check,
        "validate a config file without starting",
        json_flag=True,
        parent=config_commands,
    )
    check.add_argument("path", nargs="?", help="file to check (default: as `bzzz run` would)")

    log_parser = commands.add_parser("log", help="the audit log (read from disk)")
    log_commands = log_parser.add_subparsers(dest="log_command", required=True, metavar="COMMAND")
    show = add("show", cmd_log_show, "print entries", json_flag=True, parent=log_commands)
    follow = add(
        "follow", cmd_log_follow, "print entries as they land", json_flag=True, parent=log_commands
    )
    for sub in (show, follow):
        sub.add_argument("--author", metavar="PEER_ID", help="whose log (default: this node's)")
        sub.add_argument("--type", metavar="T", help="only entries of this type")
    show.add_argument("--since", metavar="SEQ", type=int, default=1, help="from this seq on")
    add(
        "verify",
        cmd_log_verify,
        "check every log and replica: records, chain, signatures",
        json_flag=True,
        parent=log_commands,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bzzz.control import ControlError, NoDaemon

    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        for problem in exc.problems:
            _error(problem)
        return EXIT_USAGE
    except NoDaemon as exc:
        _error(str(exc))
        return EXIT_NO_DAEMON
    except ControlError as exc:
        _error(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `bzzz status | head`
        sys.stderr.close()
        return EXIT_OK
    return code
