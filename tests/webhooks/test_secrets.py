"""Where the webhook secrets come from: config first, else a 0600 file in the data dir."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from coral_server.webhooks import load_or_create_secret


def test_configured_secrets_win(tmp_path: Path) -> None:
    (tmp_path / "webhook-secret").write_text("file-secret")
    assert load_or_create_secret(tmp_path, ["new", "old"]) == ([b"new", b"old"], "config")


def test_more_than_two_configured_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        load_or_create_secret(tmp_path, ["a", "b", "c"])


def test_generated_once_then_read_back(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    secrets, source = load_or_create_secret(data_dir, [])
    assert source == "generated"
    assert len(secrets) == 1 and len(secrets[0]) == 64  # 32 random bytes in hex
    path = data_dir / "webhook-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(data_dir, []) == (secrets, "data-dir")
    assert [p.name for p in data_dir.iterdir()] == ["webhook-secret"]  # no temp file left behind


def test_existing_file_is_used(tmp_path: Path) -> None:
    (tmp_path / "webhook-secret").write_text("from-file\n")
    assert load_or_create_secret(tmp_path, []) == ([b"from-file"], "data-dir")


def test_empty_file_is_an_error_not_a_silent_empty_key(tmp_path: Path) -> None:
    (tmp_path / "webhook-secret").write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_or_create_secret(tmp_path, [])
