"""The life of a node: build every part from the config, start them in order, serve, stop.

`Node.run()` reads top to bottom as the process's life: signals, start-up (host, control socket,
metrics), READY, the background loops in one task group (the web view among them, started after
READY), then the orderly stop in reverse order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from bzzz import __version__, logs
from bzzz.antennae.reasoning import ChatReasoner, Reasoner, RulesReasoner
from bzzz.antennae.service import Antennae
from bzzz.auditlog import reader
from bzzz.auditlog.log import AuditLog, AuditLogError, ChainWriter
from bzzz.auditlog.replication import PROTOCOL as LOG_PROTOCOL
from bzzz.auditlog.replication import Replicator
from bzzz.auditlog.segments import ChainStore
from bzzz.bus import MessageBus
from bzzz.config import LoadedConfig
from bzzz.control import Command, ControlServer
from bzzz.discovery import Dialer, MdnsDiscovery, want_bootstrap_peers
from bzzz.messages import AntennaeData, CapabilityBroadcast, LogHead, Message, TaskData
from bzzz.metrics import MetricsServer
from bzzz.p2p import GuestStopped, Host, Identity, verify
from bzzz.p2p.addresses import dialable
from bzzz.peers import PeerRecord, PeerTable
from bzzz.presence import Presence
from bzzz.sandbox import Limits, Sandbox
from bzzz.stacks import innermost_line
from bzzz.systemd import Notifier
from bzzz.tasks.board import STAGES, Known
from bzzz.tasks.coordinator import TaskCoordinator
from bzzz.tasks.execution import Execution
from bzzz.tasks.github import GitHub, load_token
from bzzz.tasks.trust import Trust
from bzzz.web.events import EventHub
from bzzz.web.sources import Sources

if TYPE_CHECKING:
    from bzzz.llm import Llm

log = structlog.get_logger(__name__)

# The whole orderly stop must fit in this (the unit's TimeoutStopSec is 30 s); then the process
# exits regardless. Giving held tasks back to GitHub may take most of it.
STOP_DEADLINE = 25.0
RELEASE_DEADLINE = 15.0
STALE_AFTER_BEATS = 3
DISCONNECT_TIMEOUT = 5.0
FORGET_AFTER_BEATS = 20
STATUS_PEERS = 64  # peers listed by `bzzz status`
TRANSCRIPTS = "transcripts"  # the agents' transcripts, in the state dir
WEB_RETRY_S = 30.0  # after the web view's port could not be had


class Node:
    def __init__(self, loaded: LoadedConfig, identity: Identity, env: Mapping[str, str]) -> None:
        config = loaded.config
        self.loaded = loaded
        self.identity = identity
        self.agent_id = config.node.agent_id or identity.short_id
        self.started_at = datetime.now(UTC)
        self._started = time.monotonic()
        self._stop = asyncio.Event()
        self._stopping = False
        self.loop_restarts: Counter[str] = Counter()
        interval = config.p2p.capability_interval
        self.hub = EventHub()  # the node's own event stream (the web view's live updates)

        self.bus = MessageBus(identity.peer_id, config.p2p.max_clock_skew, config.p2p.allow_peers)
        self.host = Host(identity, config.p2p.listen, self.bus.admitters(), config.p2p.allow_peers)
        self.bus.attach(self.host)
        log_root = reader.log_root(loaded.paths.state_dir)
        own = identity.peer_id
        self.audit = AuditLog(
            ChainWriter(
                ChainStore(log_root / own, own), config.auditlog.fsync, config.auditlog.batch_ms
            ),
            own,
            identity.sign,
        )
        allowed = frozenset(config.p2p.allow_peers)
        replicate_after = config.auditlog.replicate_after * interval
        self.replicator = Replicator(
            self.host,
            self.audit,
            log_root,
            verify,
            eligible=lambda author: (
                author in allowed or self.peers.connected_for(author) >= replicate_after
            ),
            max_replicas=config.auditlog.max_replicas,
        )
        self.host.set_stream_handler(LOG_PROTOCOL, self.replicator.serve)
        self.peers = PeerTable(
            identity.peer_id,
            stale_after=STALE_AFTER_BEATS * interval,
            forget_after=FORGET_AFTER_BEATS * interval,
            max_peers=config.p2p.max_peers,
        )
        self.github = self._github_client(env)
        self.llm = self._llm_client(env)
        self.trust = Trust(config.github.trusted_associations, config.github.trusted_users)
        self.antennae = Antennae(
            config=config.antennae,
            bus=self.bus,
            peers=self.peers,
            record=self._record,
            own_id=identity.peer_id,
            agent_id=self.agent_id,
            capabilities=list(config.node.capabilities),
            reasoner=self._reasoner(),
            github=self.github,
            poll_interval=config.github.poll_interval,
            holder_of=lambda key: self.tasks.holder_of(key),
            trust=self.trust,
        )
        self.sandbox = Sandbox(
            config.executor.sandbox,
            hidden=self._secrets(env),
            network=config.executor.sandbox_network,
            limits=Limits(
                config.executor.sandbox_memory_mb,
                config.executor.sandbox_processes,
                config.executor.sandbox_cpu_s,
            ),
        )
        self.execution = (
            Execution(
                github=self.github,
                config=config.executor,
                llm_config=config.llm,
                llm=self.llm,
                sandbox=self.sandbox,
                env=env,
                agent_id=self.agent_id,
                own_id=identity.peer_id,
                transcripts=loaded.paths.state_dir / TRANSCRIPTS,
                trust=self.trust,
                record=self._record,
            )
            if self.github is not None
            else None
        )
        self.tasks = TaskCoordinator(
            github_config=config.github,
            execution=self.execution,
            github=self.github,
            bus=self.bus,
            peers=self.peers,
            record=self._record,
            own_id=identity.peer_id,
            agent_id=self.agent_id,
            capabilities=list(config.node.capabilities),
            state_dir=loaded.paths.state_dir,
            sign=identity.sign,
            verify=verify,
            trust=self.trust,
            models=config.node.models,
            heartbeat=lambda: self.presence.poller_heartbeat(),
            deliberate=self.antennae.deliberate if config.antennae.require_consensus else None,
            finished=self.antennae.task_finished,
        )
        self.presence = Presence(
            config.node,
            self.agent_id,
            interval,
            self.bus,
            self.host,
            self.peers,
            load=self.tasks.load,
            network_id=config.p2p.network_id,
            log_head=self._log_head,
            polls_github=lambda: self.tasks.polls_github,
            models=self.tasks.models,
            problem=lambda: self.tasks.executor_problem if self.tasks.polls_github else None,
        )
        self.dialer = Dialer(self.host)
        self.mdns = (
            MdnsDiscovery(self.host, self.dialer, config.mdns, config.p2p.network_id)
            if config.mdns.enabled
            else None
        )
        # One table for the control socket and the web view's /api/: the CLI and the page
        # show the same data because they call the same functions.
        self.commands: dict[str, Command] = {
            "status": self._status_command,
            "peers": self._peers_command,
            "tasks": lambda args: self.tasks.status(),
            "discuss": lambda args: self.antennae.status(str(args.get("task", ""))),
        }
        self.control = ControlServer(loaded.paths.control_socket, self.commands)
        self.metrics = MetricsServer(config.control.metrics_listen, self._snapshot)
        self.systemd = Notifier(env)

        self.bus.on_every(self.peers.on_message)
        self.bus.on_every(self._tell_message)
        self.bus.on(CapabilityBroadcast, self._on_capabilities)
        self.peers.add_listener(self._audit_peer)
        self.peers.add_listener(self._tell_peer)
        self.tasks.board.on_phase(self._tell_task)
        for listener in (
            self.peers.on_peer_event,
            self.presence.on_peer_event,
            self.dialer.on_peer_event,
        ):
            self.host.add_peer_listener(listener)

    # ---- life ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT; raise if a part fails (the caller exits non-zero)."""
        self._install_signal_handlers()
        log.info(
            "node_starting",
            peer_id=self.identity.peer_id,
            agent=self.agent_id,
            version=__version__,
            config=str(self.loaded.source or "(defaults)"),
            state_dir=str(self.loaded.paths.state_dir),
        )
        async with contextlib.AsyncExitStack() as stack:
            await self.audit.start()
            stack.push_async_callback(self.audit.stop)
            if self.github is not None:
                stack.callback(self.github.close)
            await self.replicator.start()
            stack.push_async_callback(self.replicator.stop)
            self._record("node_started", {"version": __version__, "agent_id": self.agent_id})
            await self.host.start()
            stack.push_async_callback(self.host.stop)
            await self.control.start()
            stack.push_async_callback(self.control.stop)
            self.metrics.start()
            stack.callback(self.metrics.stop)
            try:
                await self._serve()
            finally:
                # On every way out, a clean stop or a failure: what we hold goes back.
                await self.tasks.release_all(within=RELEASE_DEADLINE)
                await self.presence.farewell()
                # Written before the log closes (the stack unwinds after this).
                self._record("node_stopped", {"uptime_s": round(self.uptime(), 1)})
        log.info("node_stopped", uptime_s=round(self.uptime(), 1))
        logs.close()  # the last line: a late thread's record must not follow it

    async def _serve(self) -> None:
        async with asyncio.TaskGroup() as group:
            want_bootstrap_peers(
                self.dialer, self.loaded.config.p2p.bootstrap_peers, self.identity.peer_id
            )
            loops: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
                "bus": self.bus.run,
                "presence": self.presence.run,
                "dialer": self.dialer.run,
                "replicator": self.replicator.run,
                "tasks": self.tasks.run,
                "antennae": self.antennae.run,
                "liveness": self._drop_unresponsive_peers,
                "systemd": self._report_to_systemd,
            }
            if self.mdns is not None:
                loops["mdns"] = self.mdns.run
            tasks = [group.create_task(self._supervise(name, run)) for name, run in loops.items()]
            # The libp2p host is the one part whose end ends the node (systemd restarts it).
            tasks.append(group.create_task(self._watch_host()))
            web = self.loaded.config.control.http_listen
            log.info(
                "node_ready",
                listen=dialable(self.host.listen_addrs()),
                control=str(self.control.path),
                metrics=self.metrics.address or "off",
                web=web or "off",
            )
            self.systemd.ready(self._status_line())
            if web:
                tasks.append(group.create_task(self._supervise("web", self._serve_web)))
            await self._stop.wait()
            for task in tasks:
                task.cancel()

    async def _supervise(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run one of the node's loops for as long as the node runs: a bug that escapes it is
        logged with its traceback and the loop starts again (after a pause that grows to a
        minute), instead of taking the node down with it."""
        pause = 1.0
        while True:
            started = time.monotonic()
            try:
                await run()
                return
            except GuestStopped:
                return  # the host is gone: _watch_host ends the node
            except Exception:
                self.loop_restarts[name] += 1
                log.exception("node_loop_failed", loop=name, restart_in_s=pause)
            if time.monotonic() - started > 300:
                pause = 1.0  # it had run well for a while: a fresh fault
            await asyncio.sleep(pause)
            pause = min(pause * 2, 60.0)

    async def _serve_web(self) -> None:
        """The web view, started after READY: neither its import (aiohttp) nor its port stands
        between the node and ready. A port that is taken is retried, quietly."""
        from bzzz.web.server import WebServer

        control = self.loaded.config.control
        sources = Sources(
            commands=self.commands,
            github=self.tasks.github_status,
            hops=self.antennae.hops,
            state_dir=self.loaded.paths.state_dir,
            verify=verify,
            agent_id=self.agent_id,
        )
        server = WebServer(control.http_listen, control.http_token_file, sources, self.hub)
        while True:
            try:
                await server.run()
            except OSError as exc:
                log.error("web_unavailable", error=str(exc), retry_in_s=WEB_RETRY_S)
            await asyncio.sleep(WEB_RETRY_S)

    def request_stop(self) -> None:
        self._stop.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stopping:
            log.error("node_forced_exit", signal=name)
            os._exit(1)
        self._stopping = True
        log.info("node_stopping", signal=name)
        self.systemd.stopping()
        # Last resort if some part hangs on the way out; systemd would SIGKILL us later anyway.
        asyncio.get_running_loop().call_later(STOP_DEADLINE, self._stop_overdue)
        self.request_stop()

    def _stop_overdue(self) -> None:
        still = [
            f"{task.get_name()} at {innermost_line(task.get_coro())}"
            for task in asyncio.all_tasks()
            if not task.done()
        ]
        log.error("node_stop_overdue", deadline_s=STOP_DEADLINE, still_running=sorted(still))
        os._exit(1)

    async def _watch_host(self) -> None:
        await self.host.wait_done()
        raise RuntimeError("the p2p host stopped unexpectedly")

    async def _drop_unresponsive_peers(self) -> None:
        """Close links to peers that stopped beating, so the dialers reconnect as soon as the
        network allows: TCP alone may take many minutes to notice a partition, and then
        more to retransmit."""
        while True:
            for peer_id in self.peers.unresponsive():
                log.warning("peer_unresponsive", peer=peer_id)
                try:
                    async with asyncio.timeout(DISCONNECT_TIMEOUT):
                        await self.host.disconnect(peer_id)
                except (TimeoutError, GuestStopped) as exc:
                    log.debug("peer_disconnect_failed", peer=peer_id, error=repr(exc))
            await asyncio.sleep(1)

    async def _report_to_systemd(self) -> None:
        """Watchdog pings from the event loop itself: a stuck loop stops them and gets restarted."""
        interval = self.systemd.watchdog_interval or 5.0
        while True:
            self.systemd.watchdog()
            self.systemd.status(self._status_line())
            await asyncio.sleep(interval)

    def _secrets(self, env: Mapping[str, str]) -> list[Path]:
        """What the sandbox hides: the node's key, logs and other tasks' trees (the state dir),
        its control socket (the runtime dir), its config and credentials (where the tokens
        are), and the token and model key files, wherever they are."""
        paths = self.loaded.paths
        config = self.loaded.config
        hidden = [paths.state_dir, paths.runtime_dir, paths.control_socket.parent]
        if paths.credentials_dir is not None:
            hidden.append(paths.credentials_dir)
        if self.loaded.source is not None:
            hidden.append(self.loaded.source.parent)
        for name in (config.github.token_file, config.llm.api_key_file):
            if name:
                hidden.append(Path(name))
        return hidden

    def _llm_client(self, env: Mapping[str, str]) -> Llm | None:
        """The [llm] endpoint, when the executor or Antennae speak to it (the client, and its
        import, are not paid for otherwise)."""
        config = self.loaded.config
        if config.executor.kind != "llm" and config.antennae.reasoning != "llm":
            return None
        from bzzz import llm

        key = llm.load_api_key(self.loaded.paths.credentials_dir, config.llm.api_key_file, env)
        return llm.Llm(config.llm.url, key, config.llm.timeout)

    def _reasoner(self) -> Reasoner:
        config = self.loaded.config.antennae
        rules = RulesReasoner()
        if config.reasoning == "rules":
            return rules
        from bzzz import llm as chat

        if config.reasoning == "llm":
            assert self.llm is not None
            llm, model = self.llm, config.reasoning_model or self.loaded.config.llm.model
        else:  # "ollama", "openai": their own endpoint, spoken to the OpenAI way
            url = config.reasoning_url.rstrip("/")
            url = url if url.endswith("/v1") else url + "/v1"
            llm = chat.Llm(url, None, config.reasoning_timeout)
            model = config.reasoning_model
        return ChatReasoner(llm, model, config.reasoning_timeout, config.reasoning_budget, rules)

    def _github_client(self, env: Mapping[str, str]) -> GitHub | None:
        config = self.loaded.config.github
        found = load_token(self.loaded.paths.credentials_dir, config.token_file, env)
        if found is None:
            log.info("github_disabled", reason="no token: P2P only")
            return None
        if not config.repositories:
            log.info("github_idle", reason="no repositories configured")
        else:
            log.info("github_token", source=found[1], base_url=config.base_url)
        return GitHub(
            config.base_url,
            found[0],
            config.request_interval,
            config.write_interval,
            login=config.login,
        )

    # ---- the audit trail -------------------------------------------------------------------

    def _record(self, type: str, data: dict[str, Any]) -> None:
        """Put an event into our own log, in the order events happen, without waiting for the
        disk. Never raises: the log cuts what it is given to fit, and a failing disk is logged
        once by the log itself."""
        try:
            signed, durable = self.audit.append_nowait(type, data)
        except AuditLogError:
            return
        except Exception:
            log.exception("auditlog_record_failed", type=type)
            return
        durable.add_done_callback(lambda f: f.cancelled() or f.exception())
        if self.hub.listening:
            task = data.get("task")
            self.hub.publish(
                "audit",
                {
                    "type": signed.entry.type,
                    "seq": signed.entry.seq,
                    "task": task if isinstance(task, str) else None,
                    "keys": sorted(data)[:16],
                },
            )

    def _audit_peer(self, kind: str, peer: PeerRecord) -> None:
        if kind == "joined":
            self._record("peer_joined", {"peer": peer.peer_id, "address": peer.address})
        elif kind == "left":
            self._record("peer_left", {"peer": peer.peer_id})
        elif kind == "capabilities":
            self._record(
                "capability_changed",
                {
                    "peer": peer.peer_id,
                    "agent_id": peer.agent_id,
                    "capabilities": peer.capabilities,
                    "models": peer.models,
                    "version": peer.version,
                },
            )

    # ---- the event stream (the web view's live updates) ------------------------------------

    def _tell_message(self, msg: Message) -> None:
        if not self.hub.listening:
            return  # nobody to tell: not even the summary is made
        data = msg.data
        event: dict[str, Any] = {
            "type": msg.type.value,
            "topic": msg.topic,
            "from": msg.sender,
            "sent_at": msg.timestamp.isoformat(),
            "hops": msg.hop_count,
        }
        if isinstance(data, TaskData) and data.repository:
            event["task"] = f"{data.repository}#{data.task_id}"
        elif isinstance(data, AntennaeData):
            event["task"] = data.conversation
        self.hub.publish("message", event)

    def _tell_peer(self, kind: str, peer: PeerRecord) -> None:
        if self.hub.listening:
            self.hub.publish("peer", {"peer": peer.peer_id, "change": kind, "agent": peer.agent_id})

    def _tell_task(self, known: Known) -> None:
        if self.hub.listening:
            phase = known.phase
            self.hub.publish(
                "task",
                {
                    "task": known.task.key,
                    "phase": phase.value,
                    "stage": STAGES[phase],
                    "holder": known.holder,
                },
            )

    def _log_head(self) -> LogHead | None:
        head = self.audit.head
        if head is None:
            return None
        return LogHead(
            seq=head.entry.seq, hash=head.hash, sig=base64.b64encode(head.signature).decode()
        )

    def _on_capabilities(self, msg: Message[CapabilityBroadcast]) -> None:
        if msg.data.log_head is not None:
            self.replicator.on_head(msg.sender, msg.data.log_head.seq)

    # ---- what the node tells ---------------------------------------------------------------

    def uptime(self) -> float:
        return time.monotonic() - self._started

    def _status_line(self) -> str:
        counts = self.peers.counts()
        return f"peers={counts['connected']} stale={counts['stale']}"

    def status(self) -> dict[str, Any]:
        """The node's state as `bzzz status --json` shows it (also the source of /metrics)."""
        return {
            "peer_id": self.identity.peer_id,
            "agent_id": self.agent_id,
            "version": __version__,
            "network_id": self.loaded.config.p2p.network_id,
            "started_at": self.started_at.isoformat(),
            "uptime_s": round(self.uptime(), 1),
            "listen": dialable(self.host.listen_addrs()),
            "capabilities": list(self.loaded.config.node.capabilities),
            "cluster": self._cluster(),
            # Bounded whatever the crowd: `bzzz peers` has the whole table.
            "peers": self.peers.snapshot(limit=STATUS_PEERS),
            "peer_counts": self.peers.counts(),
            "connected": self.host.connected_peers()[:STATUS_PEERS],
            "messages": self.bus.stats(),
            "broadcasts_sent": self.presence.broadcasts_sent,
            "auditlog": self._auditlog_status(),
            "antennae": {
                "conversations": len(self.antennae.conversations),
                "open": sum(c.state == "open" for c in self.antennae.conversations.values()),
                "escalated": sum(
                    c.state == "escalated" for c in self.antennae.conversations.values()
                ),
                **dict(self.antennae.stats),
            },
            "loop_restarts": dict(self.loop_restarts),
            "tasks": {
                "held": self.tasks.load()[0],
                "max": self.tasks.load()[1],
                "poller": self.tasks.polls_github and self.tasks.is_poller(),
                "poller_id": self.tasks.poller_id() if self.tasks.polls_github else None,
                "github": self.tasks.github_status(),
                "executor": self.tasks.executor_status(),
            },
            "config": str(self.loaded.source or ""),
            "state_dir": str(self.loaded.paths.state_dir),
        }

    def _cluster(self) -> list[dict[str, Any]]:
        """One row per node of the cluster, this one first: the rows of `bzzz status`. Peers
        that never announced themselves (not bzzz nodes, or not yet) are in `bzzz peers`."""
        held, most = self.tasks.load()
        executor = self.tasks.executor_status() or {}
        own = {
            "peer_id": self.identity.peer_id,
            "agent_id": self.agent_id,
            "here": True,
            "state": "ready" if held == 0 else "busy" if held >= most else "working",
            "works": not executor.get("problem"),
            "connected_peers": self.peers.counts()["connected"],
            "tasks": [held, most],
            "models": self.presence.capability().models,
            "version": __version__,
            "heard_s": 0.0,
        }
        rows = [own]
        for peer in self.peers.snapshot(limit=STATUS_PEERS):
            if not peer["version"] and not peer["agent_id"]:
                continue  # never announced itself
            state = peer["status"] if peer["state"] == "connected" else peer["state"]
            rows.append(
                {
                    "peer_id": peer["peer_id"],
                    "agent_id": peer["agent_id"],
                    "here": False,
                    "state": state,
                    "works": peer["works"],
                    "connected_peers": peer["connected_peers"],
                    "tasks": [peer["current_tasks"], peer["max_tasks"]],
                    "models": peer["models"],
                    "version": peer["version"],
                    "heard_s": peer["last_seen_s"],
                }
            )
        return rows

    def _auditlog_status(self) -> dict[str, Any]:
        writer = self.audit.writer
        return {
            "head": {"seq": writer.head_seq, "hash": writer.head_hash},
            "fsync": self.loaded.config.auditlog.fsync,
            "failed": str(writer.failed) if writer.failed else None,
            "problems": [str(p) for p in writer.store.scan.problems],
            **self.replicator.status(),
        }

    async def _snapshot(self) -> dict[str, Any]:
        return self.status()

    def _status_command(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    def _peers_command(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return self.peers.snapshot()
