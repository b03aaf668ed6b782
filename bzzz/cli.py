"""The `bzzz` command: `run` is the daemon; the rest are thin clients or offline tools.

Exit codes: 0 success, 1 runtime failure, 2 usage or config error, 3 no daemon answering.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import grp
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bzzz import __version__
from bzzz import config as config_module
from bzzz.config import ConfigError, LoadedConfig
from bzzz.control import ASK_TIMEOUT
from bzzz.display import ago, clip, duration, short_id

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
FOLLOW_POLL_S = 0.5


class CommandError(Exception):
    """A failure a command explains in one line, with the exit code it means."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def _error(message: str) -> None:
    # Under systemd the line goes to the journal: give it error priority there.
    from bzzz.logs import is_journal

    prefix = "<3>" if is_journal(os.environ, sys.stderr) else ""
    print(f"{prefix}bzzz: {message}", file=sys.stderr)


def _permission_denied(exc: PermissionError) -> str:
    """One line for a path we may not use, and what would let us: the group that owns it
    when that group may, else sudo."""
    if not exc.filename:
        return f"permission denied: {exc.strerror or exc}"
    path = Path(exc.filename)
    advice = "run with sudo"
    # The nearest path we can see is what stops us: the file itself or a closed directory.
    for blocker in (path, *path.parents):
        try:
            info = blocker.stat()
        except OSError:
            continue
        # What its group needs: list a directory, write a socket, read a file.
        mode = info.st_mode
        need = 0o050 if stat.S_ISDIR(mode) else 0o020 if stat.S_ISSOCK(mode) else 0o040
        if info.st_gid != 0 and mode & need == need:
            try:
                group = grp.getgrgid(info.st_gid).gr_name
            except KeyError:
                break
            owner = "it" if blocker == path else str(blocker)
            advice = (
                f"join the group that owns {owner}: `sudo usermod -aG {group} $USER` "
                "and log in again, or run with sudo"
            )
        break
    return f"permission denied: {path} ({advice})"


def _load(args: argparse.Namespace) -> LoadedConfig:
    return config_module.load(args.config)


# ---- the daemon -----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    loaded = _load(args)
    config_module.check_files(loaded)
    # Start-up allocates hundreds of thousands of long-lived objects (modules, classes, pydantic
    # schemas): collecting while they pile up only walks them again and again. Collection
    # resumes once the node is built, over what is made after (gc.freeze below).
    gc.disable()
    # Imported here: the client commands need not pay for importing libp2p.
    from bzzz import lazy_imports

    lazy_imports.install()
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
        node = Node(loaded, identity, os.environ)
        gc.freeze()  # what start-up made lives as long as the process: never scanned again
        gc.enable()
        await node.run()

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
    from bzzz.p2p.addresses import dialable

    # Where the others dial this node once it runs: its p2p.bootstrap_peers entry elsewhere.
    listen = loaded.config.p2p.listen
    addresses = dialable([f"{address}/p2p/{identity.peer_id}" for address in listen])
    if args.json:
        _print_json(
            {
                "peer_id": identity.peer_id,
                "path": str(identity.path),
                "created": created,
                "addresses": addresses,
            }
        )
    else:
        verb = "created" if created else "exists"
        print(f"{identity.peer_id}\n(key {verb}: {identity.path})")
        print("dial it at (once it runs):\n" + "\n".join(f"  {a}" for a in addresses))
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
    if not args.json:
        print(__version__)
        return EXIT_OK
    import platform
    from importlib import metadata

    try:
        libp2p: str | None = metadata.version("libp2p")
    except metadata.PackageNotFoundError:
        libp2p = None
    _print_json({"version": __version__, "python": platform.python_version(), "libp2p": libp2p})
    return EXIT_OK


# ---- the audit log, read from disk ----------------------------------------------------------


def _audit_log(state_dir: Path) -> tuple[Path, list[str]]:
    """The log directory and its authors. None is a usage error: most likely the wrong
    state dir, which an empty listing would hide."""
    from bzzz.auditlog import reader

    root = reader.log_root(state_dir)
    authors = reader.authors(root)
    if not authors:
        raise CommandError(
            f"no audit log in {state_dir} (is the state dir right? see --config)", EXIT_USAGE
        )
    return root, authors


def _log_scope(args: argparse.Namespace) -> tuple[Path, list[str]]:
    """The log directory and the authors to show: --author, else our own, else all."""
    from bzzz.p2p import load_existing

    state_dir = _load(args).paths.state_dir
    root, authors = _audit_log(state_dir)
    if getattr(args, "author", None):
        return root, [_resolve_author(root, authors, args.author)]
    own = load_existing(state_dir)
    if own is not None and own.peer_id in authors:
        return root, [own.peer_id]
    return root, authors


def _resolve_author(root: Path, authors: list[str], wanted: str) -> str:
    """The author `wanted` names: a peer id, its last 6+ characters (or the `12D3Ko…aXHoUh`
    the CLI shows), or an agent id the log names. Unknown or ambiguous is a usage error."""
    if wanted in authors:
        return wanted
    head, _, tail = wanted.rpartition("…")
    found = [a for a in authors if len(tail) >= 6 and a.startswith(head) and a.endswith(tail)]
    if not found:
        found = sorted(_agent_peers(root, authors).get(wanted, set()) & set(authors))
    if len(found) > 1:
        raise CommandError(
            f"--author {wanted} names {len(found)} logs: {', '.join(found)}; give a peer id",
            EXIT_USAGE,
        )
    if not found:
        raise CommandError(
            f"--author {wanted}: no log in {root} by that peer id, peer id ending or agent id",
            EXIT_USAGE,
        )
    return found[0]


def _agent_peers(root: Path, authors: list[str]) -> dict[str, set[str]]:
    """Agent id -> the peers that announced it, as the logs tell: each node's own
    `node_started`, and the `capability_changed` it recorded of others."""
    from bzzz.auditlog import reader

    peers: dict[str, set[str]] = {}
    for author in authors:
        store, _ = reader.open_chain(root, author)
        for signed in reader.entries(store):
            entry = signed.entry
            peer: Any
            if entry.type == "node_started":
                peer = entry.author
            elif entry.type == "capability_changed":
                peer = entry.data.get("peer")
            else:
                continue
            agent = entry.data.get("agent_id")
            if isinstance(agent, str) and agent and isinstance(peer, str):
                peers.setdefault(agent, set()).add(peer)
    return peers


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

    root, _ = _audit_log(_load(args).paths.state_dir)
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


def _ask(args: argparse.Namespace, command: str, request: dict[str, Any] | None = None) -> Any:
    from bzzz import control

    return control.request(_load(args).paths.control_socket, command, request, args.timeout)


def cmd_status(args: argparse.Namespace) -> int:
    status = _ask(args, "status")
    if args.json:
        _print_json(status)
        return EXIT_OK
    print(
        f"{status['agent_id']} · {short_id(status['peer_id'])} · bzzz {status['version']} · "
        f"network {status['network_id']} · up {duration(status['uptime_s'])}"
    )
    print("dial this node at (p2p.bootstrap_peers of the others):")
    for addr in status["listen"]:
        print(f"  {addr}")
    executor = (status.get("tasks") or {}).get("executor")
    if executor:
        print(f"executor:  {_executor_line(executor)}")
    print()
    _print_table(_cluster_rows(status["cluster"]))
    print()
    for label, text in _summary_lines(status):
        print(f"{label + ':':<11}{text}")
    return EXIT_OK


def _cluster_rows(cluster: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [
        ("NODE", "PEER", "STATE", "PEERS", "TASKS", "MODELS", "VERSION", "HEARD")
    ]
    for node in cluster:
        state = node["state"] if node["works"] else f"{node['state']}, idle*"
        peers = node["connected_peers"]
        rows.append(
            (
                clip(node["agent_id"] or "-", 16) + (" *" if node["here"] else ""),
                short_id(node["peer_id"]),
                state,
                "?" if peers is None else str(peers),
                "{}/{}".format(*node["tasks"]),
                clip(",".join(node["models"]) or "-", 20),
                clip(node["version"] or "?", 10),
                "-" if node["here"] else ago(node["heard_s"]),
            )
        )
    return rows


def _summary_lines(status: dict[str, Any]) -> list[tuple[str, str]]:
    """The audit log, GitHub, Antennae and the gossip counters, one line each."""
    audit = status["auditlog"]
    damage = [*audit["problems"], *([audit["failed"]] if audit["failed"] else [])]
    lines = [
        (
            "audit log",
            f"{audit['head']['seq']} entries here, {audit['replicas_total']} replicas, "
            f"{audit['forks_total']} forks, "
            + (f"DAMAGED: {clip(damage[0], 50)}" if damage else "no damage"),
        )
    ]
    tasks = status["tasks"]
    github = tasks["github"]
    if github is None:
        lines.append(("github", "not configured (P2P only: no token or no repositories)"))
    else:
        poller = tasks.get("poller_id")
        who = "this node polls" if tasks["poller"] else f"{_agent_of(status, poller)} polls"
        budget = (
            f"budget {github['remaining']}/{github['limit']} left"
            if github["remaining"] is not None
            else "budget not known yet"
        )
        paused = f", PAUSED {github['paused_s']:.0f}s" if github["paused_s"] else ""
        login = f", LOGIN FAILED: {github['login_error']}" if github.get("login_error") else ""
        lines.append(("github", f"{who}; {budget}{paused}{login}"))
    antennae = status["antennae"]
    lines.append(
        (
            "antennae",
            f"{antennae.get('open', 0)} open conversations, {antennae.get('escalated', 0)} "
            "escalated to humans",
        )
    )
    stats = status["messages"]
    received = sum(t["accepted"] for t in stats["topics"].values())
    sent = sum(t["published"] for t in stats["topics"].values())
    refused = sum(stats["rejected"].values())
    missed = sum(p.get("missed", 0) for p in status["peers"])
    lines.append(
        (
            "messages",
            f"{received} received, {sent} sent, {refused} refused, {stats['dropped']} dropped, "
            f"{missed} missed",
        )
    )
    return lines


def _agent_of(status: dict[str, Any], peer_id: str | None) -> str:
    if not peer_id:
        return "nobody"
    for node in status["cluster"]:
        if node["peer_id"] == peer_id:
            return str(node["agent_id"] or short_id(peer_id))
    return short_id(peer_id)


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
        heard = "-" if t["heard_s"] is None else f"{duration(t['heard_s'])} ago"
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
    rows = _ask(args, "discuss", {"task": args.task or ""})
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
        _print_table(_peer_rows(peers))
    else:
        print("no peers")
    return EXIT_OK


def _peer_rows(peers: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """What the README promises: agent, capabilities, models, availability, last seen, the
    state of the link, and messages received and missed."""
    rows: list[tuple[str, ...]] = [
        ("PEER", "AGENT", "CAPABILITIES", "MODELS", "STATUS", "STATE", "SEEN", "RECV", "MISS")
    ]
    for p in peers:
        status = p["status"] if p.get("works", True) else f"{p['status']}, idle*"
        rows.append(
            (
                short_id(p["peer_id"]),
                clip(p["agent_id"] or "-", 14),
                clip(",".join(p["capabilities"]) or "-", 14),
                clip(",".join(p["models"]) or "-", 14),
                status,
                p.get("state", "stale" if p["stale"] else "connected"),
                ago(p["last_seen_s"]),
                str(p["received"]),
                str(p["missed"]),
            )
        )
    return rows


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = zip(row, widths, strict=True)
        print("  ".join(cell.ljust(width) for cell, width in cells).rstrip())
    if any("idle*" in cell for row in rows for cell in row):
        print("* cannot work now: `bzzz status` on that node says why")


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    print()


# ---- argument parsing -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    config_help = f"config file (default: $BZZZ_CONFIG, else {config_module.DEFAULT_CONFIG_PATH})"
    timeout_help = f"seconds to wait for the daemon's answer (default: {ASK_TIMEOUT:g})"
    parser = argparse.ArgumentParser(prog="bzzz", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", metavar="PATH", help=config_help)
    parser.add_argument(
        "--timeout", metavar="SECONDS", type=_seconds, default=ASK_TIMEOUT, help=timeout_help
    )
    # `--config` is also taken after the command (`bzzz run --config PATH`, as the unit has it);
    # SUPPRESS keeps an absent one from hiding the one given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help=config_help, default=argparse.SUPPRESS)
    # The same for `--timeout`, on the commands that ask the daemon.
    asking = argparse.ArgumentParser(add_help=False)
    asking.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        default=argparse.SUPPRESS,
        help=timeout_help,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str,
        handler: Callable[[argparse.Namespace], int],
        help: str,
        json_flag: bool = False,
        parent: Any = commands,
        asks: bool = False,
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(
            name, help=help, description=help, parents=[common, asking] if asks else [common]
        )
        # `what` names the command in a failure's line: "log show", not just "show".
        sub.set_defaults(handler=handler, what=sub.prog.partition(" ")[2])
        if json_flag:
            sub.add_argument("--json", action="store_true", help="machine-readable output")
        return sub

    run = add("run", cmd_run, "run the daemon in the foreground")
    run.add_argument("--log-format", choices=["console", "json"], help="override node.log_format")
    run.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="override node.log_level"
    )
    add("status", cmd_status, "show the running node's state", json_flag=True, asks=True)
    add("peers", cmd_peers, "show the running node's peer table", json_flag=True, asks=True)
    tasks = add(
        "tasks",
        cmd_tasks,
        "show the tasks this node knows: phase, holder, lease",
        json_flag=True,
        asks=True,
    )
    tasks.add_argument("task", nargs="?", help="one task (owner/repo#n)")
    tasks.add_argument(
        "--transcript",
        action="store_true",
        help="the agent's transcript of the task's latest run here (read from the state dir)",
    )
    discuss = add(
        "discuss",
        cmd_discuss,
        "show Antennae conversations and their state",
        json_flag=True,
        asks=True,
    )
    discuss.add_argument("task", nargs="?", help="one conversation (owner/repo#n), with history")
    add("init", cmd_init, "create the node key (if missing) and print the peer id", json_flag=True)
    add(
        "version",
        cmd_version,
        "print the version (--json: with Python's and libp2p's)",
        json_flag=True,
    )
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
        sub.add_argument(
            "--author",
            metavar="WHO",
            help="whose log: a peer id, its last 6+ characters, or an agent id "
            "(default: this node's)",
        )
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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):  # also NaN
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr and an exit code (the module's
    docstring lists them). BZZZ_DEBUG=1 shows the traceback of an unexpected one."""
    args = build_parser().parse_args(argv)
    from bzzz.control import ControlError, NoDaemon

    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        for problem in exc.problems:
            _error(problem)
        return EXIT_USAGE
    except CommandError as exc:
        _error(str(exc))
        return exc.code
    except NoDaemon as exc:
        _error(str(exc))
        return EXIT_NO_DAEMON
    except ControlError as exc:
        _error(str(exc))
        return EXIT_FAILURE
    except PermissionError as exc:
        _error(_permission_denied(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `bzzz status | head`
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:
        # The daemon logs its own failures, with tracebacks for bugs (cmd_run).
        if args.handler is cmd_run or os.environ.get("BZZZ_DEBUG") == "1":
            raise
        _error(f"{args.what}: {type(exc).__name__}: {exc} (BZZZ_DEBUG=1 shows where)")
        return EXIT_FAILURE
    return code
