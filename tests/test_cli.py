"""The `coral-server` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on http://([^:\s]+):(\d+)")


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CORAL_SERVER_") and k != "CONFIG_FILE_PATH"
    }
    env.update(extra)
    return env


def run(*args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coral_server", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=clean_env(**env),
    )


class Server:
    def __init__(self, proc: subprocess.Popen[str], port: int, banner: str) -> None:
        self.proc = proc
        self.port = port
        self.banner = banner

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, object]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def close(self) -> None:
        """Kill it if it still runs, reap it and close its pipes."""
        close(self.proc)


def close(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def start(tmp_path: Path, *args: str) -> Server:
    proc = subprocess.Popen(
        [sys.executable, "-m", "coral_server", "--port", "0", "--data-dir", str(tmp_path / "data"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=clean_env(),
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        match = LISTENING.search(line)
        if match:
            return Server(proc, int(match.group(2)), "".join(seen))
    close(proc)
    raise AssertionError("server did not print its port: " + "".join(seen))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start(tmp_path)
    yield srv
    srv.close()


def test_help_documents_the_flags() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("usage: coral-server")
    for flag in (
        "--port",
        "--auth-key",
        "--registry",
        "--data-dir",
        "--host",
        "--config",
        "--public-url",
        "--wait-cap-ms",
        "--stop-grace-s",
        "--log-level",
    ):
        assert flag in out, flag
    assert "CONFIG_FILE_PATH" in out
    assert "CORAL_SERVER_" in out


def test_serves_health_and_exits_on_sigterm(server: Server, tmp_path: Path) -> None:
    assert server.port > 0
    assert "127.0.0.1" in server.banner
    assert re.search(r"server\.collector young=50000 frozen=[1-9]", server.banner)  # collector.tune
    assert server.get("/health") == (200, {"status": "ok"})
    status, listing = server.get("/api/v1/session")
    assert (status, listing) == (200, [])
    status, registry = server.get("/api/v1/registry")
    assert status == 200
    assert isinstance(registry, list)
    assert [a["name"] for a in registry[0]["agents"]] == ["echo", "llm"]  # bundled registry only
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0


def test_exits_on_sigint(server: Server) -> None:
    assert server.get("/health")[0] == 200
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=10) == 0


def test_sigterm_is_quick(server: Server) -> None:
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=10)
    assert time.monotonic() - started < 5


def test_auth_key_flag(tmp_path: Path) -> None:
    srv = start(tmp_path, "--auth-key", "abc", "--auth-key", "def")
    try:
        assert srv.get("/health")[0] == 200
        assert srv.get("/api/v1/session")[0] == 401
        assert srv.get("/api/v1/session", {"Authorization": "Bearer abc"}) == (200, [])
        assert srv.get("/api/v1/session", {"Authorization": "Bearer def"}) == (200, [])
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=10) == 0
    finally:
        srv.close()


def test_an_open_api_on_every_address_is_a_warning(tmp_path: Path) -> None:
    srv = start(tmp_path, "--host", "0.0.0.0")
    try:
        assert "WARNING: the API has no auth key and listens on 0.0.0.0" in srv.banner
    finally:
        srv.close()
    srv = start(tmp_path, "--host", "0.0.0.0", "--auth-key", "k")
    try:
        assert "no auth key" not in srv.banner
    finally:
        srv.close()
    srv = start(tmp_path)  # loopback, no key: development, no warning
    try:
        assert "no auth key" not in srv.banner
    finally:
        srv.close()


def test_registry_flag_replaces_bundled(tmp_path: Path) -> None:
    srv = start(tmp_path, "--registry", str(ROOT / "tests" / "fixtures" / "registry" / "opts"))
    try:
        status, registry = srv.get("/api/v1/registry")
        assert status == 200
        assert isinstance(registry, list)
        assert registry[0]["agents"] == [{"name": "opts", "versions": ["1.0.0"]}]
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=10) == 0
    finally:
        srv.close()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--port", "99999"], "port"),
        (["--wait-cap-ms", "0"], "wait_cap_ms"),
        (["--config", "/no/such/coral.toml"], "/no/such/coral.toml"),
    ],
)
def test_bad_configuration_exits_2_with_message(args: list[str], fragment: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("coral-server: ")
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_log_level_exits_2_with_message(tmp_path: Path) -> None:
    result = run("--port", "0", "--data-dir", str(tmp_path), "--log-level", "LOUD")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "log" in result.stderr.lower()


def test_schemas_check() -> None:
    result = run("schemas", "--check")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


@pytest.mark.parametrize("kind", ["a file", "under a file", "a database that is not one"])
def test_a_data_dir_that_cannot_be_used_is_one_clear_line(tmp_path: Path, kind: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory\n")
    data = {"a file": blocker, "under a file": blocker / "data"}.get(kind, tmp_path / "data")
    if kind == "a database that is not one":
        data.mkdir()
        (data / "coral.db").write_text("this is not a SQLite database, it is text " * 100)
    done = run("--port", "0", "--data-dir", str(data))
    # Besides the usual log lines (none above INFO), the failure is one line, not a traceback.
    lines = [line for line in done.stderr.splitlines() if line.startswith("coral-server:")]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert " ERROR " not in done.stderr and " WARNING " not in done.stderr, done.stderr
    assert lines[0].startswith("coral-server: cannot start: ")
    assert str(blocker if kind != "a database that is not one" else data / "coral.db") in lines[0]
