"""Black-box: agent processes live and die with their session (TTL, DELETE, exit, shutdown)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Coral, agent_spec, session_body, start_coral, wait_until


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only reaping is left.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def wait_pids(path: Path, timeout: float = 30) -> list[int]:
    """The pids a sleeper wrote (its own, its grandchild's), once it has written them."""
    await wait_until(lambda: path.exists() and path.read_text().endswith("\n"), timeout, what=f"{path}")
    return [int(p) for p in path.read_text().split()]


async def wait_dead(pids: list[int], timeout: float = 10) -> None:
    await wait_until(lambda: not any(alive(p) for p in pids), timeout, what=f"{pids} dead")


def sleeper(name: str, pid_file: Path, **options: object) -> dict[str, object]:
    opts = {"PID_FILE": {"type": "string", "value": str(pid_file)}}
    opts.update({k: {"value": v} for k, v in options.items()})
    return agent_spec(name, "sleeper", options=opts)


async def test_ttl_kills_every_process_even_deaf_to_sigterm(coral: Coral, tmp_path: Path) -> None:
    # The TTL runs from the session's creation: the agents must be running well within it, so the
    # zygote's SDK import (seconds on a busy machine) is paid before, not inside the 1.5 s.
    await coral.warm_python_agents()
    files = [tmp_path / "a.pid", tmp_path / "b.pid"]
    ns, sid = await coral.create_session(
        session_body([sleeper("a", files[0]), sleeper("b", files[1])], ttl=1500)
    )
    pids = [pid for f in files for pid in await wait_pids(f)]
    assert len(pids) == 4 and all(alive(p) for p in pids)
    state = await coral.state(ns, sid)
    assert [a["status"] for a in state["agents"]] == ["running", "running"]
    # TTL 1.5 s + SIGTERM ignored → SIGKILL after the 2 s grace; grandchildren die with the group.
    await coral.wait_gone(ns, sid, timeout=10)
    await wait_dead(pids, timeout=5)


async def test_delete_stops_agents_and_forgets_session(coral: Coral, tmp_path: Path) -> None:
    pid_file = tmp_path / "s.pid"
    ns, sid = await coral.create_session(session_body([sleeper("s", pid_file, IGNORE_TERM=False)]))
    pids = await wait_pids(pid_file)
    status, _ = await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}")
    assert status == 200
    # The leader exits on SIGTERM; its deaf grandchild is killed with the process group.
    await wait_dead(pids, timeout=5)
    status, _ = await coral.request("GET", f"/api/v1/session/{ns}/{sid}")
    assert status == 404


async def test_agent_exit_code_and_logs_visible(coral: Coral, tmp_path: Path) -> None:
    pid_file = tmp_path / "x.pid"
    ns, sid = await coral.create_session(
        session_body(
            [sleeper("quitter", pid_file, EXIT_AFTER_S=0.2)],
            ttl=30000,
            persistenceMode={"mode": "hold_after_exit", "duration": 3000},
        )
    )
    state = await coral.wait_for(ns, sid, lambda s: s["agents"][0]["status"] == "exited")
    assert state["agents"][0]["exitCode"] == 7
    assert state["agents"][0]["isConnected"] is False
    status, logs = await coral.request("GET", f"/api/v1/session/{ns}/{sid}/agents/quitter/logs")
    assert status == 200
    assert ("stdout", "sleeper started") in [(ln["stream"], ln["text"]) for ln in logs["lines"]]
    assert ("stderr", "sleeper stderr line") in [(ln["stream"], ln["text"]) for ln in logs["lines"]]
    # The session closed (its only agent exited) but stays readable for the hold time, then goes.
    assert state["closing"] is True or (await coral.state(ns, sid))["closing"] is True
    await coral.wait_gone(ns, sid, timeout=10)


async def test_session_closes_when_all_launched_agents_exit(coral: Coral, tmp_path: Path) -> None:
    ns, sid = await coral.create_session(
        session_body([sleeper("q", tmp_path / "q.pid", EXIT_AFTER_S=0.1)], namespace="gone")
    )
    await coral.wait_gone(ns, sid)
    status, listing = await coral.request("GET", "/api/v1/session")
    assert status == 200 and all(entry["namespace"] != "gone" for entry in listing)


async def test_missing_executable_is_reported_not_hung(coral: Coral, tmp_path: Path) -> None:
    # The fixture registry's "broken-path" agent points at an executable that does not exist.
    ns, sid = await coral.create_session(
        session_body(
            [agent_spec("bad", "broken-path")], persistenceMode={"mode": "hold_after_exit", "duration": 5000}
        )
    )
    state = await coral.wait_for(ns, sid, lambda s: s["agents"][0]["status"] == "failed")
    # Its only agent could not start, so the session closed; the hold keeps the failure readable.
    state = await coral.wait_for(ns, sid, lambda s: s["closing"])
    assert state["agents"][0]["status"] == "failed"
    assert "not found" in state["agents"][0]["error"]


async def test_options_reach_the_agent_encoded(coral: Coral) -> None:
    options = {
        "NAME": {"type": "string", "value": "abc"},
        "SMALL": {"type": "u8", "value": 255},
        "FLAG": {"type": "bool", "value": True},
        "TAGS": {"type": "list[string]", "value": ["x", "y"]},
        "DATA": {"type": "blob", "value": "aGk="},
        "TOKEN": {"type": "secret", "value": "s3cr3t-value"},
    }
    ns, sid = await coral.create_session(
        session_body(
            [agent_spec("o", "opts", version="1.0.0", options=options)],
            persistenceMode={"type": "HoldAfterExit", "holdTime": 10000},
        )
    )
    await coral.wait_for(ns, sid, lambda s: s["agents"][0]["status"] == "exited", timeout=15)
    _, logs = await coral.request("GET", f"/api/v1/session/{ns}/{sid}/agents/o/logs")
    out = dict(ln["text"].split("=", 1) for ln in logs["lines"] if "=" in ln["text"])
    assert out["NAME"] == "abc" and out["SMALL"] == "255" and out["FLAG"] == "1"
    assert out["COUNT"] == "5"  # the manifest default is exported when the request omits it
    assert out["RATIO"] == "0.5" and out["MODE"] == "fast"
    assert out["TAGS"] == "x,y" and out["DATA"] == "aGk="
    assert out["TOKEN_LEN"] == str(len("s3cr3t-value"))
    assert out["TOKEN_ECHO"] == "***"  # the agent printed its secret: the log redacts it
    assert out["CONFIG_FILE_CONTENT"] == "file-contents"
    assert out["CWD"].endswith("fixtures/registry/opts")
    assert out["CONNECTION_URL_OK"] == "True"


async def test_server_shutdown_stops_every_agent(tmp_path: Path) -> None:
    pid_file = tmp_path / "z.pid"
    async for coral in start_coral(tmp_path):
        await coral.create_session(session_body([sleeper("z", pid_file)]))
        pids = await wait_pids(pid_file)
    await wait_dead(pids, timeout=5)


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().split(") ", 1)[1].split()[1])


@pytest.mark.parametrize("mode", ["preload", "exec"])
async def test_python_agents_preloaded_or_started_anew(tmp_path: Path, mode: str) -> None:
    async for coral in start_coral(tmp_path, python_agents=mode):
        pid_file = tmp_path / "p.pid"
        ns, sid = await coral.create_session(session_body([sleeper("p", pid_file, IGNORE_TERM=False)]))
        leader = (await wait_pids(pid_file))[0]
        parent = parent_of(leader)
        with open(f"/proc/{parent}/cmdline", "rb") as f:
            forked = b"coral_server.runtimes.zygote" in f.read()
        # preload: forked by the zygote (not by this process, the server); exec: the server's child.
        assert (forked, parent == os.getpid()) == ((True, False) if mode == "preload" else (False, True))
        status, _ = await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}")
        assert status == 200
        await wait_dead([leader], timeout=5)
