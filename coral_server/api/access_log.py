"""The HTTP access log: one structured line per request, its target masked of every credential."""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
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
