"""`schemas/` is generated from the API models and must be up to date; `stale()` finds drift."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coral_server.api import schemas
from coral_server.api.models import REQUEST_MODELS, RESPONSE_MODELS

EXPECTED_FILES = sorted([*(f"{n}.json" for n in {**REQUEST_MODELS, **RESPONSE_MODELS}), "openapi.json"])


def test_committed_schemas_are_up_to_date() -> None:
    assert schemas.stale() == []


def test_committed_schema_files_are_exactly_the_generated_ones() -> None:
    assert sorted(p.name for p in schemas.SCHEMA_DIR.glob("*.json")) == EXPECTED_FILES
    for path in schemas.SCHEMA_DIR.glob("*.json"):
        json.loads(path.read_bytes())  # each is valid JSON


def test_fresh_copy_is_not_stale(tmp_path: Path) -> None:
    schemas.write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == EXPECTED_FILES
    assert schemas.stale(tmp_path) == []
    # identical bytes to the committed files
    for name in EXPECTED_FILES:
        assert (tmp_path / name).read_bytes() == (schemas.SCHEMA_DIR / name).read_bytes(), name


@pytest.mark.parametrize("name", ["CreateSessionRequest.json", "openapi.json", "ErrorBody.json"])
def test_modified_file_is_reported(tmp_path: Path, name: str) -> None:
    schemas.write(tmp_path)
    target = tmp_path / name
    data = json.loads(target.read_bytes())
    data["title"] = "tampered"
    target.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    assert schemas.stale(tmp_path) == [name]


def test_whitespace_change_is_reported(tmp_path: Path) -> None:
    schemas.write(tmp_path)
    target = tmp_path / "SessionState.json"
    target.write_bytes(target.read_bytes() + b"\n")
    assert schemas.stale(tmp_path) == ["SessionState.json"]


def test_missing_and_extra_files_are_reported(tmp_path: Path) -> None:
    schemas.write(tmp_path)
    (tmp_path / "AgentLogs.json").unlink()
    (tmp_path / "Leftover.json").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("not a schema\n")
    assert schemas.stale(tmp_path) == ["AgentLogs.json", "Leftover.json"]


def test_several_problems_sorted(tmp_path: Path) -> None:
    schemas.write(tmp_path)
    (tmp_path / "openapi.json").write_text("{}")
    (tmp_path / "AgentConnection.json").write_text("{}")
    assert schemas.stale(tmp_path) == ["AgentConnection.json", "openapi.json"]


def test_write_repairs_and_removes_leftovers(tmp_path: Path) -> None:
    schemas.write(tmp_path)
    (tmp_path / "SessionSummary.json").write_text("{}")
    (tmp_path / "Leftover.json").write_text("{}")
    schemas.write(tmp_path)
    assert schemas.stale(tmp_path) == []
    assert not (tmp_path / "Leftover.json").exists()


def test_empty_directory_reports_every_file(tmp_path: Path) -> None:
    assert schemas.stale(tmp_path) == EXPECTED_FILES
