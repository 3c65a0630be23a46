"""Layered settings: defaults < TOML file < CORAL_SERVER_* environment < flags."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from coral_server.config import BUNDLED_REGISTRY, Settings, SettingsInvalid, load_settings


def toml(tmp_path: Path, text: str, name: str = "coral.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


FULL_TOML = """
[network]
bindAddress = "0.0.0.0"
bindPort = 6000
publicUrl = "http://coral.example:6000"

[auth]
keys = ["toml-a", "toml-b"]

[registry]
paths = ["agents-here", "/abs/agents"]

[server]
dataDir = "/var/lib/coral"

[session]
defaultWaitTimeout = 1234
stopGraceSeconds = 1.5

[logging]
level = "DEBUG"
"""


def test_defaults() -> None:
    settings = load_settings([], {})
    assert settings == Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 5555
    assert settings.auth_keys == ()
    assert settings.registry == (BUNDLED_REGISTRY,)
    assert settings.data_dir == Path(".coral")
    assert settings.public_url is None
    assert settings.wait_cap_ms == 60_000
    assert settings.stop_grace_s == 5.0
    assert settings.log_level == "INFO"
    assert settings.agent_api_url(4321) == "http://127.0.0.1:4321"


def test_os_environ_not_read_when_env_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORAL_SERVER_PORT", "7777")
    assert load_settings([], {}).port == 5555
    assert load_settings([]).port == 7777  # env=None means os.environ


def test_every_toml_key(tmp_path: Path) -> None:
    path = toml(tmp_path, FULL_TOML)
    s = load_settings(["--config", str(path)], {})
    assert s.host == "0.0.0.0"
    assert s.port == 6000
    assert s.public_url == "http://coral.example:6000"
    assert s.agent_api_url(1) == "http://coral.example:6000"
    assert s.auth_keys == ("toml-a", "toml-b")
    # relative registry paths are relative to the config file's folder
    assert s.registry == (tmp_path / "agents-here", Path("/abs/agents"))
    assert s.data_dir == Path("/var/lib/coral")
    assert s.wait_cap_ms == 1234
    assert s.stop_grace_s == 1.5
    assert s.log_level == "DEBUG"


def test_every_env_variable() -> None:
    env = {
        "CORAL_SERVER_HOST": "10.0.0.1",
        "CORAL_SERVER_PORT": "7000",
        "CORAL_SERVER_AUTH_KEYS": "env-a,env-b",
        "CORAL_SERVER_REGISTRY": os.pathsep.join(["/r1", "/r2"]),
        "CORAL_SERVER_DATA_DIR": "/tmp/coral-data",
        "CORAL_SERVER_PUBLIC_URL": "http://pub:1/",
        "CORAL_SERVER_WAIT_CAP_MS": "500",
        "CORAL_SERVER_STOP_GRACE_S": "0.25",
        "CORAL_SERVER_LOG_LEVEL": "WARNING",
    }
    s = load_settings([], env)
    assert s.host == "10.0.0.1"
    assert s.port == 7000
    assert s.auth_keys == ("env-a", "env-b")
    assert s.registry == (Path("/r1"), Path("/r2"))
    assert s.data_dir == Path("/tmp/coral-data")
    assert s.public_url == "http://pub:1/"
    assert s.agent_api_url(1) == "http://pub:1"
    assert s.wait_cap_ms == 500
    assert s.stop_grace_s == 0.25
    assert s.log_level == "WARNING"


def test_every_flag(tmp_path: Path) -> None:
    s = load_settings(
        [
            "--host", "::1",
            "--port", "0",
            "--auth-key", "f1",
            "--registry", "/f/reg",
            "--data-dir", str(tmp_path),
            "--public-url", "http://flag:9",
            "--wait-cap-ms", "42",
            "--stop-grace-s", "0",
            "--log-level", "ERROR",
        ],
        {},
    )  # fmt: skip
    assert (s.host, s.port, s.auth_keys, s.registry) == ("::1", 0, ("f1",), (Path("/f/reg"),))
    assert (s.data_dir, s.public_url, s.wait_cap_ms, s.stop_grace_s) == (tmp_path, "http://flag:9", 42, 0.0)
    assert s.log_level == "ERROR"


def test_precedence_default_toml_env_flag(tmp_path: Path) -> None:
    path = toml(tmp_path, "[network]\nbindPort = 6000\n[auth]\nkeys = ['from-toml']\n")
    assert load_settings([], {}).port == 5555
    assert load_settings(["--config", str(path)], {}).port == 6000
    env = {"CORAL_SERVER_PORT": "7000"}
    s = load_settings(["--config", str(path)], env)
    assert s.port == 7000
    assert s.auth_keys == ("from-toml",)  # untouched by env
    s = load_settings(["--config", str(path), "--port", "8000"], env)
    assert s.port == 8000
    assert s.auth_keys == ("from-toml",)


def test_auth_keys_precedence_replaces_not_merges(tmp_path: Path) -> None:
    path = toml(tmp_path, "[auth]\nkeys = ['t1', 't2']\n")
    assert load_settings(["--config", str(path)], {}).auth_keys == ("t1", "t2")
    env = {"CORAL_SERVER_AUTH_KEYS": "e1"}
    assert load_settings(["--config", str(path)], env).auth_keys == ("e1",)
    assert load_settings(["--config", str(path), "--auth-key", "f1"], env).auth_keys == ("f1",)


def test_config_file_path_env_honoured(tmp_path: Path) -> None:
    path = toml(tmp_path, "[network]\nbindPort = 6100\n")
    assert load_settings([], {"CONFIG_FILE_PATH": str(path)}).port == 6100


def test_config_flag_beats_config_file_path(tmp_path: Path) -> None:
    from_env = toml(tmp_path, "[network]\nbindPort = 6100\n", "env.toml")
    from_flag = toml(tmp_path, "[network]\nbindPort = 6200\n", "flag.toml")
    s = load_settings(["--config", str(from_flag)], {"CONFIG_FILE_PATH": str(from_env)})
    assert s.port == 6200


def test_empty_config_file_path_is_ignored() -> None:
    assert load_settings([], {"CONFIG_FILE_PATH": ""}).port == 5555


def test_repeatable_auth_key_and_registry() -> None:
    s = load_settings(
        ["--auth-key", "a", "--registry", "/one", "--auth-key", "b", "--registry", "two", "--auth-key", "c"],
        {},
    )
    assert s.auth_keys == ("a", "b", "c")
    assert s.registry == (Path("/one"), Path("two"))


def test_env_auth_keys_skip_empty_items() -> None:
    assert load_settings([], {"CORAL_SERVER_AUTH_KEYS": "a,,b,"}).auth_keys == ("a", "b")
    assert load_settings([], {"CORAL_SERVER_AUTH_KEYS": ""}).auth_keys == ()


def test_unknown_toml_sections_and_keys_are_ignored(tmp_path: Path) -> None:
    path = toml(tmp_path, "[network]\nbindPort = 6000\nfoo = 1\n[something]\nx = 'y'\n")
    assert load_settings(["--config", str(path)], {}).port == 6000


def test_settings_are_frozen() -> None:
    s = load_settings([], {})
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        s.port = 1  # type: ignore[misc]


# -- errors -------------------------------------------------------------------------------------


def test_bad_toml_is_config_error_naming_the_file(tmp_path: Path) -> None:
    path = toml(tmp_path, "[network\nbindPort = 1\n")
    with pytest.raises(SettingsInvalid) as info:
        load_settings(["--config", str(path)], {})
    message = str(info.value)
    assert str(path) in message
    assert "line 1" in message


def test_missing_config_file_is_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    for argv, env in [(["--config", str(missing)], {}), ([], {"CONFIG_FILE_PATH": str(missing)})]:
        with pytest.raises(SettingsInvalid) as info:
            load_settings(argv, env)
        assert str(missing) in str(info.value)
        assert "does not exist" in str(info.value)


@pytest.mark.parametrize(
    ("argv", "env", "toml_text", "field"),
    [
        pytest.param([], {"CORAL_SERVER_PORT": "abc"}, None, "port", id="env-port-not-int"),
        pytest.param([], {"CORAL_SERVER_PORT": "65536"}, None, "port", id="env-port-too-big"),
        pytest.param(["--port", "-1"], {}, None, "port", id="flag-port-negative"),
        pytest.param(["--port", "70000"], {}, None, "port", id="flag-port-too-big"),
        pytest.param([], {}, "[network]\nbindPort = 'x'\n", "port", id="toml-port-string"),
        pytest.param([], {}, "[auth]\nkeys = 'one-key'\n", "auth_keys", id="toml-keys-not-a-list"),
        pytest.param([], {}, "[auth]\nkeys = [1, 2]\n", "auth_keys", id="toml-keys-not-strings"),
        pytest.param([], {"CORAL_SERVER_WAIT_CAP_MS": "0"}, None, "wait_cap_ms", id="wait-cap-zero"),
        pytest.param(["--wait-cap-ms", "-5"], {}, None, "wait_cap_ms", id="wait-cap-negative"),
        pytest.param([], {"CORAL_SERVER_STOP_GRACE_S": "-1"}, None, "stop_grace_s", id="grace-negative"),
        pytest.param([], {"CORAL_SERVER_STOP_GRACE_S": "soon"}, None, "stop_grace_s", id="grace-not-number"),
        pytest.param([], {}, "[session]\nlogBufferBytes = 0\n", "log_buffer_bytes", id="log-buffer-zero"),
    ],
)
def test_bad_values_are_config_errors_naming_the_setting(
    tmp_path: Path, argv: list[str], env: dict[str, str], toml_text: str | None, field: str
) -> None:
    if toml_text is not None:
        argv = [*argv, "--config", str(toml(tmp_path, toml_text))]
    with pytest.raises(SettingsInvalid) as info:
        load_settings(argv, env)
    message = str(info.value)
    assert message.startswith("invalid settings: ")
    assert re.search(rf"(^|; |: ){field}(\.\d+)?: ", message), message


def test_several_bad_values_are_all_named() -> None:
    with pytest.raises(SettingsInvalid) as info:
        load_settings(["--port", "99999", "--wait-cap-ms", "0"], {"CORAL_SERVER_STOP_GRACE_S": "-1"})
    message = str(info.value)
    assert "port: " in message and "wait_cap_ms: " in message and "stop_grace_s: " in message


@pytest.mark.parametrize("argv", [["--port", "abc"], ["--no-such-flag"], ["--wait-cap-ms", "1.5"]])
def test_unparseable_flags_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        load_settings(argv, {})
    assert info.value.code == 2


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        pytest.param(["--log-level", "LOUD"], {}, id="flag"),
        pytest.param([], {"CORAL_SERVER_LOG_LEVEL": "verbose"}, id="env"),
    ],
)
def test_unknown_log_level_is_config_error(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(SettingsInvalid, match="log_level"):
        load_settings(argv, env)


@pytest.mark.parametrize(
    ("argv", "toml_text"),
    [
        pytest.param(["--auth-key", ""], None, id="flag"),
        pytest.param([], '[auth]\nkeys = [""]\n', id="toml"),
        pytest.param(["--auth-key", "   "], None, id="flag-blank"),
    ],
)
def test_empty_auth_key_is_config_error(tmp_path: Path, argv: list[str], toml_text: str | None) -> None:
    if toml_text is not None:
        argv = [*argv, "--config", str(toml(tmp_path, toml_text))]
    with pytest.raises(SettingsInvalid, match="auth_keys"):
        load_settings(argv, {})


def test_env_auth_keys_are_trimmed() -> None:
    assert load_settings([], {"CORAL_SERVER_AUTH_KEYS": "k1, k2"}).auth_keys == ("k1", "k2")


def test_python_agents_from_each_layer(tmp_path: Path) -> None:
    assert load_settings([], {}).python_agents == "preload"
    path = toml(tmp_path, '[session]\npythonAgents = "exec"\n')
    assert load_settings(["--config", str(path)], {}).python_agents == "exec"
    assert load_settings([], {"CORAL_SERVER_PYTHON_AGENTS": "exec"}).python_agents == "exec"
    env = {"CORAL_SERVER_PYTHON_AGENTS": "exec"}
    assert load_settings(["--python-agents", "preload"], env).python_agents == "preload"
    with pytest.raises(SettingsInvalid, match=r"python_agents|pythonAgents|PYTHON_AGENTS"):
        load_settings([], {"CORAL_SERVER_PYTHON_AGENTS": "fork"})


HARDENING_TOML = """
[webhooks]
privateDestinations = "deny"
allowDestinations = ["10.1.0.0/16", "hooks.internal"]
denyDestinations = ["*.evil.example"]

[docker]
pidsLimit = 100
readOnly = true
user = "1000:1000"
manifestOverrides = ["capAdd", "user"]
"""


def test_hardening_settings_from_each_layer(tmp_path: Path) -> None:
    defaults = load_settings([], {})
    assert (defaults.webhook_private_destinations, defaults.webhook_allow, defaults.webhook_deny) == (
        "auto",
        (),
        (),
    )
    assert (defaults.docker_pids_limit, defaults.docker_read_only, defaults.docker_user) == (512, False, None)
    assert defaults.docker_manifest_overrides == ()
    s = load_settings(["--config", str(toml(tmp_path, HARDENING_TOML))], {})
    assert s.webhook_private_destinations == "deny"
    assert s.webhook_allow == ("10.1.0.0/16", "hooks.internal") and s.webhook_deny == ("*.evil.example",)
    assert (s.docker_pids_limit, s.docker_read_only, s.docker_user) == (100, True, "1000:1000")
    assert s.docker_manifest_overrides == ("capAdd", "user")
    env = {
        "CORAL_SERVER_WEBHOOK_PRIVATE_DESTINATIONS": "allow",
        "CORAL_SERVER_WEBHOOK_ALLOW": "192.168.1.5,a.example",
        "CORAL_SERVER_WEBHOOK_DENY": "8.8.8.8",
        "CORAL_SERVER_DOCKER_PIDS_LIMIT": "0",
        "CORAL_SERVER_DOCKER_READ_ONLY": "true",
        "CORAL_SERVER_DOCKER_USER": "app",
        "CORAL_SERVER_DOCKER_MANIFEST_OVERRIDES": "readOnly,pidsLimit",
    }
    s = load_settings([], env)
    assert (s.webhook_private_destinations, s.webhook_allow, s.webhook_deny) == (
        "allow",
        ("192.168.1.5", "a.example"),
        ("8.8.8.8",),
    )
    assert (s.docker_pids_limit, s.docker_read_only, s.docker_user) == (0, True, "app")
    assert s.docker_manifest_overrides == ("readOnly", "pidsLimit")
    flags = [
        "--webhook-private-destinations", "deny",
        "--webhook-allow", "10.0.0.0/8", "--webhook-allow", "x.example",
        "--webhook-deny", "*.y.example",
        "--docker-pids-limit", "64",
        "--no-docker-read-only",
        "--docker-user", "1:1",
        "--docker-manifest-override", "noNewPrivileges",
    ]  # fmt: skip
    s = load_settings(flags, env)
    assert (s.webhook_private_destinations, s.webhook_allow, s.webhook_deny) == (
        "deny",
        ("10.0.0.0/8", "x.example"),
        ("*.y.example",),
    )
    assert (s.docker_pids_limit, s.docker_read_only, s.docker_user) == (64, False, "1:1")
    assert s.docker_manifest_overrides == ("noNewPrivileges",)


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--webhook-allow", "not a host"], "webhook_allow"),
        (["--webhook-deny", "10.0.0.0/33x"], "webhook_deny"),
        (["--docker-pids-limit", "-1"], "docker_pids_limit"),
        (["--docker-user", "a b"], "docker_user"),
        (["--docker-manifest-override", "privileged"], "docker_manifest_overrides"),
    ],
)
def test_bad_hardening_values_name_the_setting(argv: list[str], field: str) -> None:
    with pytest.raises(SettingsInvalid, match=field):
        load_settings(argv, {})


@pytest.mark.parametrize(
    ("host", "keys", "warns"),
    [
        ("127.0.0.1", (), False),
        ("::1", (), False),
        ("localhost", (), False),
        ("0.0.0.0", (), True),
        ("::", (), True),
        ("192.168.1.10", (), True),
        ("coral.example", (), True),
        ("0.0.0.0", ("k",), False),
    ],
)
def test_exposure_warning(host: str, keys: tuple[str, ...], warns: bool) -> None:
    warning = Settings(host=host, auth_keys=keys).exposure_warning()
    assert (warning is not None) == warns
    if warning:
        assert "no auth key" in warning and (host in warning)


def test_task_settings_from_toml_env_and_flags(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        "[tasks]\nmisfireGraceSeconds = 60\nretryBaseSeconds = 2\nretryMaxSeconds = 30\n"
        "concurrencyDefault = 2\nconcurrencyLimits = {deploys = 3}\n",
    )
    s = load_settings(["--config", str(path)], env={})
    assert (s.task_misfire_grace_s, s.task_retry_base_s, s.task_retry_cap_s) == (60, 2, 30)
    assert s.task_concurrency_default == 2 and s.task_key_limits() == {"deploys": 3}
    s = load_settings(
        ["--task-concurrency-limit", "a=1", "--task-concurrency-limit", "b=4", "--task-retry-cap-s", "90"],
        env={"CORAL_SERVER_TASK_CONCURRENCY_LIMITS": "c=2", "CORAL_SERVER_TASK_MISFIRE_GRACE_S": "0"},
    )
    assert (
        s.task_key_limits() == {"a": 1, "b": 4} and s.task_retry_cap_s == 90 and s.task_misfire_grace_s == 0
    )
    assert Settings().task_key_limits() == {} and Settings().task_misfire_grace_s == 300


@pytest.mark.parametrize(
    "argv",
    [
        ["--task-concurrency-limit", "deploys"],
        ["--task-concurrency-limit", "deploys=0"],
        ["--task-retry-base-s", "700"],
        ["--task-misfire-grace-s", "-1"],
    ],
)
def test_bad_task_settings_are_refused(argv: list[str]) -> None:
    with pytest.raises(SettingsInvalid, match="task_"):
        load_settings(argv, env={})


def test_console_and_cors_settings_from_each_layer(tmp_path: Path) -> None:
    assert (Settings().console_dir, Settings().allow_any_host) == (None, False)
    config = tmp_path / "config.toml"
    config.write_text('[console]\ndir = "console-build"\n[network]\nallowAnyHost = true\n')
    from_toml = load_settings(["--config", str(config)], env={})
    assert from_toml.console_dir == tmp_path / "console-build"  # relative to the file
    assert from_toml.allow_any_host is True
    env = {"CORAL_SERVER_CONSOLE_DIR": "/srv/console", "CORAL_SERVER_ALLOW_ANY_HOST": "true"}
    from_env = load_settings([], env=env)
    assert (from_env.console_dir, from_env.allow_any_host) == (Path("/srv/console"), True)
    flags = load_settings(["--console-dir", "/x", "--no-allow-any-host"], env=env)
    assert (flags.console_dir, flags.allow_any_host) == (Path("/x"), False)


LIMITS = {
    "stream_write_timeout_s": ("streamWriteTimeoutSeconds", "STREAM_WRITE_TIMEOUT_S", 2.5),
    "max_streams_per_client": ("maxStreamsPerClient", "MAX_STREAMS_PER_CLIENT", 7),
    "header_timeout_s": ("headerTimeoutSeconds", "HEADER_TIMEOUT_S", 3.0),
    "body_timeout_s": ("bodyTimeoutSeconds", "BODY_TIMEOUT_S", 4.0),
    "max_connections": ("maxConnections", "MAX_CONNECTIONS", 99),
    "max_sessions": ("maxSessions", "MAX_SESSIONS", 12),
    "max_agents_per_session": ("maxAgentsPerSession", "MAX_AGENTS_PER_SESSION", 13),
    "max_group_size": ("maxGroupSize", "MAX_GROUP_SIZE", 14),
    "max_ttl_ms": ("maxTtlMs", "MAX_TTL_MS", 15000),
    "max_hold_ms": ("maxHoldMs", "MAX_HOLD_MS", 16000),
    "max_option_bytes": ("maxOptionBytes", "MAX_OPTION_BYTES", 1700),
    "max_agent_options_bytes": ("maxAgentOptionsBytes", "MAX_AGENT_OPTIONS_BYTES", 18000),
}


def test_limits_from_the_toml_table_and_the_environment(tmp_path: Path) -> None:
    defaults = Settings()
    assert (defaults.max_sessions, defaults.max_group_size, defaults.max_option_bytes) == (1000, 200, 65536)
    lines = ["[limits]"] + [f"{key} = {value}" for key, _, value in LIMITS.values()]
    from_toml = load_settings(["--config", str(toml(tmp_path, "\n".join(lines)))], {})
    from_env = load_settings([], {f"CORAL_SERVER_{env}": str(value) for _, env, value in LIMITS.values()})
    for field, (_, _, value) in LIMITS.items():
        assert getattr(from_toml, field) == value, field
        assert getattr(from_env, field) == value, field
    with pytest.raises(SettingsInvalid, match="max_sessions"):
        load_settings([], {"CORAL_SERVER_MAX_SESSIONS": "0"})
