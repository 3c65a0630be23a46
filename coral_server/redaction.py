"""What the server's log must never show: the registry of live secrets, masking, and the log filter.

Secrets are masked by type, not by each log call remembering to: whoever creates a credential
registers it here (agent secrets and secret option values by the session directory, auth keys by the
bearer check, webhook secrets where they are loaded), and one filter on the log handlers masks every
registered value in every record's final text. The HTTP access log masks request targets by shape as
well (`mask_target`): the agent-secret segment of `/mcp/v1/{secret}/...`, credential-named query
parameters, and any segment or parameter equal to a registered secret.

Masking a record costs one C-level regex scan, not one substring search per secret: most secrets
(agent secrets, hex and URL-safe keys) are made of URL-safe characters only, so each occurrence lies
inside a run of such characters at least as long as itself and is found by set lookups of that run's
windows. Only secrets with other characters are searched for one by one.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote, unquote_plus

MASK: Final = "***"
# Shorter values are not registered: they are not credentials worth the name, and masking every
# occurrence of a few common characters would garble the whole log.
MIN_LENGTH: Final = 6
# Query parameters whose name contains one of these carry credentials whatever their value.
CREDENTIAL_PARAM_MARKERS: Final = ("token", "secret", "key", "password", "passwd", "auth", "signature")

_TOKEN_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class SecretRegistry:
    """The secret values alive in this process, counted: a value stays registered while anyone holds it.

    Thread-safe: sessions register on the event loop while records may be logged from any thread.
    Readers take no lock: they test membership of sets changed in place, and read tuples that are
    replaced whole. Adding or releasing a value costs O(1) (O(others) for a value of other characters).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._tokens: set[str] = set()  # values of URL-safe characters only
        self._token_lengths: Counter[int] = Counter()
        # Their distinct lengths, ascending, and a pattern of URL-safe runs at least the shortest long.
        self._scan: tuple[tuple[int, ...], re.Pattern[str] | None] = ((), None)
        self._others: tuple[str, ...] = ()  # every other value, longest first

    def add(self, *values: str) -> None:
        """Register values (each once more); empty and too-short values are ignored."""
        with self._lock:
            for value in values:
                if len(value) < MIN_LENGTH:
                    continue
                held = self._counts.get(value, 0)
                self._counts[value] = held + 1
                if not held:
                    self._index(value)

    def discard(self, *values: str) -> None:
        """Release values registered with `add`; a value is forgotten when its last holder lets go."""
        with self._lock:
            for value in values:
                held = self._counts.get(value, 0)
                if held > 1:
                    self._counts[value] = held - 1
                elif held == 1:
                    del self._counts[value]
                    self._unindex(value)

    def __contains__(self, value: object) -> bool:
        return value in self._counts

    def __len__(self) -> int:
        return len(self._counts)

    def mask(self, text: str) -> str:
        """`text` with every registered value replaced by `MASK` (the same object when none occurs)."""
        others = self._others  # first: a URL-safe value may lie inside one of them, never the reverse
        if others:
            text = mask_values(text, others)
        lengths, runs = self._scan
        if runs is not None:
            found: set[str] = set()
            tokens = self._tokens
            for run in runs.findall(text):
                if run in tokens:
                    found.add(run)
                    continue
                size = len(run)
                for length in lengths:
                    if length >= size:
                        break
                    for start in range(size - length + 1):
                        window = run[start : start + length]
                        if window in tokens:
                            found.add(window)
            if found:
                text = mask_values(text, sorted(found, key=len, reverse=True))
        return text

    # Called with the lock held.
    def _index(self, value: str) -> None:
        if _TOKEN_CHARS.issuperset(value):
            self._tokens.add(value)
            self._token_lengths[len(value)] += 1
            if self._token_lengths[len(value)] == 1:
                self._rescan()
        else:
            self._others = tuple(sorted((*self._others, value), key=len, reverse=True))

    def _unindex(self, value: str) -> None:
        if value in self._tokens:
            self._tokens.discard(value)
            self._token_lengths[len(value)] -= 1
            if not self._token_lengths[len(value)]:
                del self._token_lengths[len(value)]
                self._rescan()
        else:
            self._others = tuple(v for v in self._others if v != value)

    def _rescan(self) -> None:
        lengths = tuple(sorted(self._token_lengths))
        runs = re.compile(f"[A-Za-z0-9_-]{{{lengths[0]},}}") if lengths else None
        self._scan = (lengths, runs)


def mask_values(text: str, values: Iterable[str]) -> str:
    """`text` with each of `values` replaced by `MASK`, in the order given (put longer values first)."""
    for value in values:
        if value and value in text:
            text = text.replace(value, MASK)
    return text


SECRETS: Final = SecretRegistry()
"""The process's registry: logging is process-wide, so what it must hide is too."""


def mask_target(target: str, secrets: SecretRegistry = SECRETS) -> str:
    """A request target (path and query, as sent) fit for the access log.

    Masked: the segment after `/mcp/v1/` (an agent secret, valid or not: its route is keyed by it),
    the value of every credential-named query parameter (`?token=`, `api_key`, ...), and any segment
    or value equal to a registered secret. Percent-encoding is seen through; the rest stays as sent.
    """
    path, question, query = target.partition("?")
    if "/" in path:
        path = _mask_path(path, secrets)
    if query:
        query = _mask_query(query, secrets)
    return path + question + query


def _mask_path(path: str, secrets: SecretRegistry) -> str:
    segments = path.split("/")
    plain = [unquote(s) if "%" in s else s for s in segments]
    changed = False
    for i, segment in enumerate(plain):
        if not segment:
            continue
        after_mcp = i >= 2 and plain[i - 1].lower() == "v1" and plain[i - 2].lower() == "mcp"
        if after_mcp or segment in secrets:
            segments[i] = MASK
            changed = True
    return "/".join(segments) if changed else path


def _mask_query(query: str, secrets: SecretRegistry) -> str:
    params = query.split("&")
    changed = False
    for i, param in enumerate(params):
        name, equals, value = param.partition("=")
        plain_name = unquote_plus(name) if "%" in name or "+" in name else name
        if plain_name in secrets:  # a secret passed as a bare word, or as a name
            params[i] = MASK
        elif equals and (
            any(marker in plain_name.lower() for marker in CREDENTIAL_PARAM_MARKERS)
            or (unquote_plus(value) if "%" in value or "+" in value else value) in secrets
        ):
            params[i] = f"{name}={MASK}"
        else:
            continue
        changed = True
    return "&".join(params) if changed else query


class RedactingFilter(logging.Filter):
    """Masks every registered secret in a record's final message, traceback and stack.

    Set on handlers (not loggers), so records propagated from every logger pass through it. Records
    that carry `redacted=True` (the access log, masked by shape as it is built) are let through as is,
    which keeps the per-request line off the scan.
    """

    def __init__(self, secrets: SecretRegistry = SECRETS) -> None:
        super().__init__()
        self.secrets = secrets
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "redacted", False) or not len(self.secrets):
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True  # a broken format string: the handler reports it
        masked = self.secrets.mask(message)
        if masked is not message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.secrets.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.secrets.mask(record.stack_info)
        return True


def install(logger: logging.Logger | None = None, secrets: SecretRegistry = SECRETS) -> None:
    """Put a `RedactingFilter` on every handler of `logger` (the root logger by default)."""
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(secrets))
