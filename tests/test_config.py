import subprocess
import sys
from pathlib import Path

import pytest

from bzzz import config
from bzzz.config import ConfigError

EXAMPLE = Path(__file__).parent.parent / "deploy" / "config.example.toml"


def problems_of(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        config.load(str(path), env={})
    return caught.value.problems


def test_no_file_at_the_default_path_means_all_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    loaded = config.load(None, env={"HOME": str(tmp_path)})
    assert loaded.source is None
    assert loaded.config.p2p.listen == ["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"]
    assert loaded.config.p2p.capability_interval == 30
    assert loaded.config.github.task_label == "bzzz-task"


def test_a_named_file_that_is_missing_is_an_error(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        config.load(str(missing), env={})
    assert caught.value.problems == [f"{missing}: file not found"]


def test_bzzz_config_variable_names_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[node]\nagent_id = "walnut"\n')
    loaded = config.load(None, env={"BZZZ_CONFIG": str(path)})
    assert loaded.source == path
    assert loaded.config.node.agent_id == "walnut"


def test_unknown_keys_are_errors_naming_file_and_key(tmp_path):
    problems = problems_of('[node]\nagentid = "x"\n[nodes]\nx = 1\n', tmp_path)
    path = tmp_path / "config.toml"
    assert f"{path}: node.agentid: unknown key" in problems
    assert f"{path}: nodes: unknown key" in problems


def test_bad_types_name_the_key_and_reason(tmp_path):
    problems = problems_of(
        '[p2p]\ncapability_interval = "often"\n[github]\nmax_tasks = 0\n', tmp_path
    )
    assert len(problems) == 2
    assert any("p2p.capability_interval" in p and "number" in p for p in problems)
    assert any("github.max_tasks" in p and "greater than or equal to 1" in p for p in problems)


def test_every_problem_is_reported_at_once_with_list_positions(tmp_path):
    problems = problems_of(
        '[p2p]\nlisten = ["/ip4/127.0.0.1/tcp/1", "nonsense"]\n'
        'bootstrap_peers = ["/ip4/10.0.0.1/tcp/4001"]\n'
        '[control]\nmetrics_listen = "localhost"\n',
        tmp_path,
    )
    joined = "\n".join(problems)
    assert "p2p.listen: " in joined and "nonsense" in joined
    assert "p2p.bootstrap_peers" in joined and "/p2p/<peer id>" in joined
    assert "control.metrics_listen" in joined
    assert len(problems) == 3


def test_invalid_toml_names_the_file_and_line(tmp_path):
    problems = problems_of("[node\n", tmp_path)
    assert problems[0].startswith(f"{tmp_path / 'config.toml'}: invalid TOML")
    assert "line 1" in problems[0]


def test_paths_follow_config_then_systemd_then_defaults(tmp_path):
    cfg = config.parse('[node]\nstate_dir = "/srv/state"\n', "x")
    paths = config.resolve_paths(cfg, {"STATE_DIRECTORY": "/var/lib/other"})
    assert paths.state_dir == Path("/srv/state")

    cfg = config.Config()
    env = {
        "STATE_DIRECTORY": "/var/lib/bzzz:/var/lib/extra",
        "RUNTIME_DIRECTORY": "/run/bzzz",
        "CREDENTIALS_DIRECTORY": "/run/credentials/bzzz.service",
    }
    paths = config.resolve_paths(cfg, env)
    assert paths.state_dir == Path("/var/lib/bzzz")
    assert paths.control_socket == Path("/run/bzzz/control.sock")
    assert paths.credentials_dir == Path("/run/credentials/bzzz.service")


def test_the_shipped_example_is_valid_and_documents_every_key():
    text = EXAMPLE.read_text()
    parsed = config.parse(text, str(EXAMPLE))
    assert parsed == config.Config(), "the example must show the defaults"
    for section_name, section in config.Config.model_fields.items():
        assert f"[{section_name}]" in text
        for key in section.annotation.model_fields:  # type: ignore[union-attr]
            assert f"\n{key} = " in text, f"{section_name}.{key} is not documented"


def test_config_check_exits_2_with_one_line_per_problem(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[p2p]\nlisten = 5\nnetwork = 'x'\n")
    result = subprocess.run(
        [sys.executable, "-m", "bzzz", "config", "check", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"bzzz: {path}: p2p.listen: Input should be a valid list",
        f"bzzz: {path}: p2p.network: unknown key",
    ]


def test_config_check_accepts_a_good_file(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text('[node]\ncapabilities = ["code"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "bzzz", "--config", str(path), "config", "check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok: {path}"


def test_config_may_follow_the_command_as_in_the_unit(tmp_path):
    path = tmp_path / "unit.toml"
    path.write_text("[node]\n")
    result = subprocess.run(
        [sys.executable, "-m", "bzzz", "config", "check", "--config", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok: {path}"


def test_a_repository_written_as_a_url_is_explained_with_owner_slash_name(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[github]\nrepositories = ["https://github.com/acme/widgets.git"]\n')
    with pytest.raises(ConfigError) as error:
        config.load(path)
    assert error.value.problems == [
        f"{path}: github.repositories: 'https://github.com/acme/widgets.git' is not owner/name "
        "(did you mean 'acme/widgets'?)"
    ]


def test_the_web_view_listens_on_loopback_by_default_and_is_validated(tmp_path):
    assert config.Config().control.http_listen == "127.0.0.1:9465"
    assert config.parse('[control]\nhttp_listen = ""\n', "x").control.http_listen == ""
    assert config.parse('[control]\nhttp_listen = "[::1]:80"\n', "x").control.http_token_file == ""
    problems = problems_of('[control]\nhttp_listen = "localhost:9465"\n', tmp_path)
    assert problems == [
        f"{tmp_path / 'config.toml'}: control.http_listen: 'localhost:9465': 'localhost' is not "
        "an IP address"
    ]


def test_a_web_view_beyond_loopback_needs_a_token_file(tmp_path):
    path = tmp_path / "config.toml"
    for listen in ("0.0.0.0:9465", "[::]:9465", "192.168.1.5:80"):
        problems = problems_of(f'[control]\nhttp_listen = "{listen}"\n', tmp_path)
        assert len(problems) == 1 and problems[0].startswith(f"{path}: control.http_token_file: ")
        assert "not a loopback address" in problems[0]
    token = tmp_path / "web-token"
    text = f'[control]\nhttp_listen = "0.0.0.0:9465"\nhttp_token_file = "{token}"\n'
    path.write_text(text)
    loaded = config.load(str(path), env={})
    with pytest.raises(ConfigError) as missing:
        config.check_files(loaded)
    assert missing.value.problems == [f"{path}: control.http_token_file: {token}: no such file"]
    token.write_text("\n")
    with pytest.raises(ConfigError) as empty:
        config.check_files(loaded)
    assert (
        "control.http_token_file" in empty.value.problems[0] and "empty" in empty.value.problems[0]
    )
    token.write_text("s3cret\n")
    config.check_files(loaded)


def test_config_check_names_the_missing_token_file_key(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[control]\nhttp_listen = "0.0.0.0:9465"\n')
    result = subprocess.run(
        [sys.executable, "-m", "bzzz", "--config", str(path), "config", "check"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"{path}: control.http_token_file: required when" in result.stderr
