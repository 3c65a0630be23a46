"""The HTTP access log: one structured line per request, its target masked of every credential."""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from coral_server.redaction import mask_target

# The line carries no header and nothing the client chose but the masked target, so it needs no
# scan for registered secrets afterwards (`RedactingFilter` lets it through as it is).
_MARKED = {"redacted": True}


class AccessLog(AbstractAccessLogger):
    """`http.request method=… path=… status=… bytes=… ms=… remote=…`; see `mask_target` for the path."""

    __slots__ = ()

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "http.request method=%s path=%s status=%s bytes=%s ms=%.1f remote=%s",
            request.method,
            mask_target(request.raw_path),
            response.status,
            response.body_length,
            time * 1000,
            request.remote,
            extra=_MARKED,
        )


class MalformedRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (a NUL in a header, a broken request line) at ERROR
    with a traceback: the client's fault, answered 400, so one INFO line without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "http.malformed_request error=%s", (f"{exc.code} {exc.message}",)
            record.exc_info = record.exc_text = None
        return True


def quiet_malformed_requests() -> None:
    """Install `MalformedRequests` on aiohttp's server logger (once)."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequests) for f in server.filters):
        server.addFilter(MalformedRequests())
