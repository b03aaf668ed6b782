"""The configuration file: TOML, validated by pydantic, with a default for every key.

Loaded once at start and passed down; nothing else reads the config file or the environment for
settings. A broken file is reported as one line per problem naming the file, the key and the reason.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Any, Literal

import multiaddr
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG_PATH = Path("/etc/bzzz/config.toml")

PositiveSeconds = Annotated[float, Field(gt=0)]


def parse_host_port(value: str) -> tuple[str, int]:
    """Split "127.0.0.1:9464" or "[::1]:9464" into an address and a port."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: expected ADDRESS:PORT")
    try:
        ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: {host!r} is not an IP address") from None
    return host, int(port)


def is_loopback(listen: str) -> bool:
    """Is this ADDRESS:PORT reachable from this machine only?"""
    return ip_address(parse_host_port(listen)[0]).is_loopback


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class NodeConfig(_Section):
    agent_id: str = ""
    capabilities: list[str] = ["general"]
    models: list[str] = []
    specialization: str = ""
    state_dir: str = ""
    runtime_dir: str = ""
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


def _is_peer_id(value: str) -> bool:
    try:
        from multiaddr import Multiaddr

        Multiaddr(f"/p2p/{value}")
    except Exception:  # the multiaddr library raises several unrelated types
        return False
    return True


def _check_multiaddr(value: str) -> str:
    try:
        multiaddr.Multiaddr(value)
    except Exception as exc:  # the multiaddr library raises several unrelated types
        raise ValueError(f"not a multiaddr: {exc}") from None
    return value


class P2PConfig(_Section):
    listen: list[str] = ["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"]
    bootstrap_peers: list[str] = []
    network_id: str = Field(default="bzzz", min_length=1)
    capability_interval: PositiveSeconds = 30
    allow_peers: list[str] = []
    # Added: envelopes whose timestamp is further than this from our clock are refused, which
    # also bounds how long a replayed message could be accepted.
    max_clock_skew: PositiveSeconds = 120
    # Added: peers kept in the peer table (any signer of a message gets a row); above it the
    # disconnected peer heard from least recently is forgotten.
    max_peers: int = Field(default=256, ge=8, le=100_000)

    @field_validator("allow_peers")
    @classmethod
    def _peer_ids(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _is_peer_id(value):
                raise ValueError(f"{value!r} is not a libp2p peer id (12D3KooW…)")
        return values

    @field_validator("listen")
    @classmethod
    def _listen_addrs(cls, values: list[str]) -> list[str]:
        for value in values:
            _check_multiaddr(value)
            if "/tcp/" not in value:
                raise ValueError(f"{value!r}: only TCP listen addresses are supported")
        return values

    @field_validator("bootstrap_peers")
    @classmethod
    def _bootstrap_addrs(cls, values: list[str]) -> list[str]:
        for value in values:
            _check_multiaddr(value)
            if "/p2p/" not in value:
                raise ValueError(f"{value!r}: needs a /p2p/<peer id> part")
        return values


class MdnsConfig(_Section):
    enabled: bool = True
    service_tag: str = Field(default="bzzz-peer-discovery", min_length=1)
    interfaces: list[str] = []


_REPOSITORY = re.compile(r"^[\w.-]+/[\w.-]+$")


class GithubConfig(_Section):
    repositories: list[str] = []
    base_url: str = "https://api.github.com"

    @field_validator("repositories")
    @classmethod
    def _owner_slash_name(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _REPOSITORY.match(value):
                example = value.removesuffix(".git").split("github.com/")[-1].strip("/")
                hint = f" (did you mean {example!r}?)" if _REPOSITORY.match(example) else ""
                raise ValueError(f"{value!r} is not owner/name{hint}")
        return values

    token_file: str = ""
    poll_interval: PositiveSeconds = 30
    task_label: str = "bzzz-task"
    in_progress_label: str = "in-progress"
    completed_label: str = "completed"
    max_tasks: int = Field(default=3, ge=1)
    lease_timeout: PositiveSeconds = 600
    # Added: seconds the P2P claim intents of an announced task are gathered before the winner
    # goes to GitHub; seconds between a holder's progress messages; attempts before a task that
    # keeps failing is labelled `failed_label` and left to humans.
    claim_window: PositiveSeconds = 2
    progress_interval: PositiveSeconds = 60
    max_attempts: int = Field(default=3, ge=1)
    failed_label: str = "bzzz-failed"
    # Added: the pauses GitHub asks clients to keep between requests and between writes (to stay
    # clear of its secondary rate limits); PyGithub's defaults.
    request_interval: float = Field(default=0.25, ge=0)
    write_interval: float = Field(default=1.0, ge=0)
    # Added: the account the token acts as, for tokens that may not read GET /user (GitHub App
    # installation tokens); empty: asked from GET /user.
    login: str = ""
    # Added: whose text counts as human input (GitHub's author_association, and logins); an
    # issue by anyone else is a task only once a trusted user applied the task label.
    trusted_associations: list[
        Literal["OWNER", "MEMBER", "COLLABORATOR", "CONTRIBUTOR", "FIRST_TIMER", "NONE"]
    ] = ["OWNER", "MEMBER", "COLLABORATOR"]
    trusted_users: list[str] = []


class ExecutorConfig(_Section):
    kind: Literal["command", "llm"] = "command"
    command: list[str] = []
    timeout: PositiveSeconds = 3600
    clone: bool = False
    # Added (see the README, "Run an agent"): the tests that judge a run (argv, run in the
    # sandbox in the work tree; exit 0 = success); the sandbox every command runs in
    # ("none" is an explicit opt-out, flagged in status and in every result comment), with the
    # network off unless allowed, and its limits; pull requests as drafts; the comment prefix
    # with which a trusted author asks for another round on the same pull request.
    test_command: list[str] = []
    sandbox: Literal["bubblewrap", "none"] = "bubblewrap"
    sandbox_network: bool = False
    sandbox_memory_mb: int = Field(default=8192, ge=0)  # address space; 0: no limit
    sandbox_processes: int = Field(default=512, ge=0)  # 0: no limit
    sandbox_cpu_s: int = Field(default=3600, ge=0)  # CPU time per command; 0: no limit
    draft_pr: bool = True
    review_trigger: str = Field(default="@bzzz", min_length=1)


class LlmConfig(_Section):
    """Added: the OpenAI-compatible chat endpoint of `executor.kind = "llm"` (and of
    `antennae.reasoning = "llm"`)."""

    url: str = "http://127.0.0.1:11434/v1"
    model: str = ""  # empty: the first model the endpoint lists
    api_key_file: str = ""  # else $CREDENTIALS_DIRECTORY/llm-api-key, else none
    timeout: PositiveSeconds = 120
    max_turns: int = Field(default=40, ge=1)
    max_tokens: int = Field(default=200_000, ge=1000)


class AuditlogConfig(_Section):
    fsync: Literal["always", "batch"] = "always"
    batch_ms: int = Field(default=5, ge=1)
    # Added: other nodes' logs replicated at once; above it the replica of the peer gone
    # longest is closed (its files stay). An author is replicated once it has been a
    # connected peer for `replicate_after` beats (`capability_interval`), or is in allow_peers.
    max_replicas: int = Field(default=64, ge=1, le=10_000)
    replicate_after: int = Field(default=2, ge=0, le=1000)


class AntennaeConfig(_Section):
    require_consensus: bool = False
    review_window: PositiveSeconds = 30
    max_rounds: int = Field(default=10, ge=1)
    webhook_url: str = ""
    reasoning: Literal["rules", "ollama", "openai", "llm"] = "rules"
    reasoning_url: str = ""
    reasoning_model: str = ""
    # Added: agreeing peers that make a plan stand before the window ends (0: the window
    # decides); seconds to wait for help; messages a peer may send per conversation per minute;
    # words that hand a conversation to humans; the label for them; the webhook's time limit;
    # the model's time limit per call and calls per hour.
    quorum: int = Field(default=0, ge=0)
    help_timeout: PositiveSeconds = 30
    max_messages_per_minute: int = Field(default=30, ge=1)
    escalation_keywords: list[str] = ["stuck", "need a human", "escalate"]
    needs_human_label: str = "needs-human"
    webhook_timeout: PositiveSeconds = 5
    reasoning_timeout: PositiveSeconds = 20
    reasoning_budget: int = Field(default=60, ge=0)
    # Added: conversations remembered (any peer can open one); the oldest not in use goes.
    max_conversations: int = Field(default=256, ge=16, le=100_000)

    @model_validator(mode="after")
    def _endpoint(self) -> AntennaeConfig:
        if self.reasoning in ("ollama", "openai") and not self.reasoning_url:
            raise ValueError(f'reasoning = "{self.reasoning}" needs reasoning_url')
        return self


class ControlConfig(_Section):
    socket: str = ""
    metrics_listen: str = "127.0.0.1:9464"
    # Added: the live web view and its JSON API (and /metrics again); "" disables it. Anywhere
    # but loopback it asks for the token in `http_token_file` (validated by default: an
    # `http_listen` on its own is checked too).
    http_listen: str = "127.0.0.1:9465"
    http_token_file: str = Field(default="", validate_default=True)

    @field_validator("metrics_listen", "http_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value:
            parse_host_port(value)
        return value

    @field_validator("http_token_file")
    @classmethod
    def _token_beyond_loopback(cls, value: str, info: ValidationInfo) -> str:
        listen = info.data.get("http_listen", "")  # absent when it was invalid itself
        if listen and not value and not is_loopback(listen):
            raise ValueError(
                f"required when control.http_listen ({listen}) is not a loopback address: "
                "anyone who can reach it would see the cluster"
            )
        return value


class Config(_Section):
    node: NodeConfig = NodeConfig()
    p2p: P2PConfig = P2PConfig()
    mdns: MdnsConfig = MdnsConfig()
    github: GithubConfig = GithubConfig()
    executor: ExecutorConfig = ExecutorConfig()
    llm: LlmConfig = LlmConfig()
    auditlog: AuditlogConfig = AuditlogConfig()
    antennae: AntennaeConfig = AntennaeConfig()
    control: ControlConfig = ControlConfig()


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds one line per fault."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Paths:
    """Where this node keeps its files, from the config, systemd's environment or defaults."""

    state_dir: Path
    runtime_dir: Path
    control_socket: Path
    credentials_dir: Path | None


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    source: Path | None  # None when no file was read
    paths: Paths


def _first_dir(value: str | None) -> Path | None:
    # systemd passes colon-separated lists when a unit names several directories.
    if not value:
        return None
    return Path(value.split(":")[0])


def resolve_paths(config: Config, env: Mapping[str, str]) -> Paths:
    """Apply the precedence: config key, then systemd's variable, then a per-user default."""
    is_root = os.geteuid() == 0
    home = Path(env.get("HOME") or Path.home())
    state_dir = (
        Path(config.node.state_dir)
        if config.node.state_dir
        else _first_dir(env.get("STATE_DIRECTORY"))
        or (Path("/var/lib/bzzz") if is_root else home / ".local/state/bzzz")
    )
    xdg_runtime = _first_dir(env.get("XDG_RUNTIME_DIR"))
    runtime_dir = (
        Path(config.node.runtime_dir)
        if config.node.runtime_dir
        else _first_dir(env.get("RUNTIME_DIRECTORY"))
        or (
            Path("/run/bzzz")
            if is_root
            else (xdg_runtime / "bzzz" if xdg_runtime else state_dir / "run")
        )
    )
    socket = Path(config.control.socket) if config.control.socket else runtime_dir / "control.sock"
    return Paths(
        state_dir=state_dir,
        runtime_dir=runtime_dir,
        control_socket=socket,
        credentials_dir=_first_dir(env.get("CREDENTIALS_DIRECTORY")),
    )


def _format_location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        else:
            parts.append(item)
    return ".".join(parts)


def _describe(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def parse(text: str, source: str) -> Config:
    """Parse and validate TOML text; `source` names the file in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: invalid TOML: {exc}"]) from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            [
                f"{source}: {_format_location(tuple(err['loc']))}: {_describe(err)}"
                for err in exc.errors()
            ]
        ) from None


def check_files(loaded: LoadedConfig) -> None:
    """What the daemon itself will read must be there and readable by this user: checked by
    `bzzz run` and `bzzz config check` (not by client commands, run by other users)."""
    source = str(loaded.source or DEFAULT_CONFIG_PATH)
    problems = []
    files = {
        "github.token_file": loaded.config.github.token_file,
        "control.http_token_file": loaded.config.control.http_token_file,
    }
    for key, name in files.items():
        if not name:
            continue
        path = Path(name)
        if not path.is_file():
            problems.append(f"{source}: {key}: {name}: no such file")
        elif not os.access(path, os.R_OK):
            problems.append(
                f"{source}: {key}: {name}: not readable by this user (uid {os.geteuid()})"
            )
        elif key == "control.http_token_file" and not path.read_bytes().strip():
            problems.append(f"{source}: {key}: {name}: empty (a token is required)")
    if problems:
        raise ConfigError(problems)


def choose_path(cli_path: str | None, env: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file to read and whether the user named it (then it must exist)."""
    if cli_path:
        return Path(cli_path), True
    if env.get("BZZZ_CONFIG"):
        return Path(env["BZZZ_CONFIG"]), True
    return DEFAULT_CONFIG_PATH, False


def load(cli_path: str | None = None, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read the config the way `bzzz` does: --config, else $BZZZ_CONFIG, else the default file.

    The default file may be absent (every key has a default); a file the user named may not.
    """
    env = os.environ if env is None else env
    path, named = choose_path(cli_path, env)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if named:
            raise ConfigError([f"{path}: file not found"]) from None
        config, source = Config(), None
    except PermissionError:
        raise  # the CLI names the group that may read it (an operator not in it yet)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    else:
        config, source = parse(text, str(path)), path
    return LoadedConfig(config=config, source=source, paths=resolve_paths(config, env))
