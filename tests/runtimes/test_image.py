"""The bundled agents' image (agents/docker/build-image.sh) on a real Docker engine.

Skipped when no engine answers, unless CORAL_TEST_DOCKER=1 (set by .ci/run once the engine answers
and the image is built): then a missing engine or image is a failure. Nothing is ever pulled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

IMAGE = "coral-agents:0.1.0"
LATEST = "coral-agents:latest"
ROOT = Path(__file__).resolve().parents[2]
REBUILD = "run agents/docker/build-image.sh"


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def run_in_image(*command: str) -> subprocess.CompletedProcess[str]:
    # --pull=never: a missing image must fail here, not reach for a registry.
    return docker("run", "--rm", "--pull=never", "--network", "host", IMAGE, *command)


@pytest.fixture(scope="module", autouse=True)
def engine() -> None:
    required = os.environ.get("CORAL_TEST_DOCKER") == "1"
    if shutil.which("docker") is None:
        reason = "the docker CLI is not installed"
    else:
        try:
            info = docker("info", "--format", "{{.ServerVersion}}", timeout=30)
        except subprocess.TimeoutExpired:
            reason = "`docker info` timed out"
        else:
            if info.returncode == 0:
                return
            reason = f"`docker info` failed: {info.stderr.strip()[-300:]}"
    if required:
        pytest.fail(f"CORAL_TEST_DOCKER=1 but no Docker engine is usable: {reason}")
    pytest.skip(f"no Docker engine ({reason})")


def inspect(ref: str) -> dict[str, Any]:
    out = docker("image", "inspect", ref)
    assert out.returncode == 0, f"image {ref} does not exist ({REBUILD}): {out.stderr.strip()}"
    data: list[dict[str, Any]] = json.loads(out.stdout)
    return data[0]


def test_image_exists_with_inputs_label() -> None:
    image = inspect(IMAGE)
    assert inspect(LATEST)["Id"] == image["Id"], f"{LATEST} is not {IMAGE} ({REBUILD})"
    labels = image["Config"]["Labels"] or {}
    assert re.fullmatch(r"[0-9a-f]{16}", labels.get("coral.inputs", "")), labels
    env = dict(e.split("=", 1) for e in image["Config"]["Env"])
    assert env["PYTHONPATH"] == "/opt/coral"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_python_mcp_and_agent_library_import_offline() -> None:
    code = "import sys, mcp, coral_server.agent; print(sys.executable, sys.version_info[:2] == (3, 11))"
    out = run_in_image("python", "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["/opt/venv/bin/python", "True"]


def test_agent_library_bytecode_is_precompiled() -> None:
    # -B: Python writes no bytecode, so a .pyc found after the import was built into the image.
    code = "import os, coral_server.agent.client as c; print(os.path.exists(c.__cached__))"
    out = run_in_image("python", "-B", "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True"], f"no bytecode for the agent library ({REBUILD})"


def test_echo_agent_without_environment_exits_2() -> None:
    out = run_in_image("python", "/opt/coral/agents/echo/agent.py")
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "CORAL_CONNECTION_URL is not set" in out.stderr


def test_image_holds_the_current_agent_files() -> None:
    files = [ROOT / "coral_server" / "__init__.py", *sorted((ROOT / "coral_server" / "agent").glob("*.py"))]
    files += sorted((ROOT / "agents").glob("*/agent.py"))
    rel = [str(f.relative_to(ROOT)) for f in files]
    code = (
        "import hashlib, sys\n"
        "for p in sys.argv[1:]:\n"
        "    print(p, hashlib.sha256(open('/opt/coral/' + p, 'rb').read()).hexdigest())\n"
    )
    out = run_in_image("python", "-c", code, *rel)
    assert out.returncode == 0, out.stderr
    in_image = dict(line.split() for line in out.stdout.splitlines())
    on_disk = {p: hashlib.sha256(f.read_bytes()).hexdigest() for p, f in zip(rel, files, strict=True)}
    stale = [p for p in rel if in_image[p] != on_disk[p]]
    assert not stale, f"{IMAGE} is stale for {stale} ({REBUILD})"
