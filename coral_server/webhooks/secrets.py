"""Where the webhook signing secrets come from: configuration, else a file kept in the data dir."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from coral_server.webhooks.signing import MAX_ACTIVE_SECRETS

log = logging.getLogger("coral_server.webhooks")

SECRET_FILE = "webhook-secret"
SecretSource = Literal["config", "data-dir", "generated"]


def _read(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if path.stat().st_mode & 0o077:
        log.warning("webhook.secret_file_permissive path=%s", path)
    if not text:
        raise ValueError(f"the webhook secret file {path} is empty; delete it to generate a new one")
    return text


def _create(path: Path) -> bool:
    """Write a fresh secret to `path` (mode 0600, never half-written); False if another writer won."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secrets.token_hex(32) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic and never overwrites an existing secret
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def load_or_create_secret(data_dir: Path, configured: Sequence[str]) -> tuple[list[bytes], SecretSource]:
    """The active secrets (current first) and where they came from, for logging the source only.

    Configured secrets (at most two, for rotation) win. Otherwise `<data_dir>/webhook-secret` is
    read, or created with 32 random bytes in hex. A secret is used as the UTF-8 bytes of its text,
    which is also what a receiver configured with the same string uses.
    """
    wanted = [s.strip() for s in configured]
    if any(not s for s in wanted):
        raise ValueError("configured webhook secrets must not be empty")
    if len(wanted) > MAX_ACTIVE_SECRETS:
        raise ValueError(f"at most {MAX_ACTIVE_SECRETS} webhook secrets may be active, got {len(wanted)}")
    if wanted:
        return [s.encode() for s in wanted], "config"
    path = data_dir / SECRET_FILE
    existing = _read(path)
    if existing is not None:
        return [existing.encode()], "data-dir"
    created = _create(path)
    text = _read(path)
    if text is None:
        raise OSError(f"cannot read back the webhook secret at {path}")
    return [text.encode()], "generated" if created else "data-dir"
