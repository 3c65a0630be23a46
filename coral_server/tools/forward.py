"""Forwards a custom tool call to the app's webhook as a signed POST and checks the answer."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import orjson
from jsonschema.validators import validator_for

from coral_server.sessions import CustomToolSpec
from coral_server.webhooks.destinations import DestinationPolicy
from coral_server.webhooks.guard import denied_reason, guarded_connector

log = logging.getLogger("coral_server.tools")

# (body, signature header name, delivery id) -> headers; the one webhook signer provides it.
Sign = Callable[[bytes, str, str], dict[str, str]]


Outcome = Literal[
    "ok", "invalid_arguments", "denied", "http_error", "timeout", "unreachable", "invalid_answer"
]


class CustomToolError(Exception):
    """A custom tool call that failed; the message says which way, for the agent to read.

    `outcome` names the way without any of the call's data (events carry it; arguments may hold
    anything), `status` is the app's HTTP status if it answered.
    """

    def __init__(self, message: str, outcome: Outcome, *, status: int | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.status = status
        self.duration_ms = 0.0


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    text: str  # the app's raw answer
    structured: dict[str, Any] | None
    duration_ms: float
    status: int


def _build_validator(schema_json: bytes) -> Any:
    schema = orjson.loads(schema_json)
    return validator_for(schema)(schema)


def _problems(validator: Any, value: Any) -> list[str]:
    found = []
    for err in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        found.append(f"{where}: {err.message}")
    return found


def target_url(base: str, session_id: str, agent: str) -> str:
    """`base + "/" + sessionId + "/" + agentName`, segments encoded, the base's query kept."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/") + "/" + quote(session_id, safe="") + "/" + quote(agent, safe="")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


class CustomToolForwarder:
    """Owns the HTTP client used for custom tool calls (one per server)."""

    def __init__(
        self, sign: Sign, timeout_s: float = 30.0, destinations: DestinationPolicy | None = None
    ) -> None:
        self._sign = sign
        # Checked on every call (the URL) and every connection (what its host resolves to).
        self._destinations = destinations if destinations is not None else DestinationPolicy()
        self._timeout_s = timeout_s
        self._http: aiohttp.ClientSession | None = None
        # Building a validator costs far more than using one: keep the recent ones, by schema text.
        self._validators = functools.lru_cache(maxsize=512)(_build_validator)

    def _check(self, schema: dict[str, Any], value: Any) -> list[str]:
        return _problems(self._validators(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)), value)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=guarded_connector(self._destinations),
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._http

    def _refused(self, tool: CustomToolSpec, reason: str) -> CustomToolError:
        log.error("custom_tool.refused tool=%s reason=%s", tool.name, reason)
        return CustomToolError(f"{tool.name}: the server may not call this tool's URL ({reason})", "denied")

    async def call(
        self, tool: CustomToolSpec, arguments: dict[str, Any], *, namespace: str, session_id: str, agent: str
    ) -> ToolOutcome:
        """Validate, POST, check the answer; raises CustomToolError saying what went wrong."""
        started = time.perf_counter()
        try:
            return await self._call(tool, arguments, namespace=namespace, session_id=session_id, agent=agent)
        except CustomToolError as exc:
            exc.duration_ms = (time.perf_counter() - started) * 1000
            raise

    async def _call(
        self, tool: CustomToolSpec, arguments: dict[str, Any], *, namespace: str, session_id: str, agent: str
    ) -> ToolOutcome:
        problems = self._check(tool.input_schema, arguments)
        if problems:
            raise CustomToolError(
                f"arguments do not match the input schema of {tool.name}: " + "; ".join(problems),
                "invalid_arguments",
            )
        body = orjson.dumps(arguments)
        delivery_id = f"call_{session_id[:8]}_{time.time_ns()}"
        headers = {
            "Content-Type": "application/json",
            "X-Coral-Namespace": namespace,
            "X-Coral-SessionId": session_id,
            "X-Coral-AgentName": agent,
            **self._sign(body, tool.signature_header, delivery_id),
        }
        url = target_url(tool.url, session_id, agent)
        problem = self._destinations.url_problem(url)
        if problem is not None:
            raise self._refused(tool, problem)
        started = time.perf_counter()
        try:
            # No redirects: one would resend the signed call to a destination nobody checked.
            async with self._client().post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            raise CustomToolError(
                f"{tool.name}: the app did not answer within {self._timeout_s:g} s", "timeout"
            ) from None
        except aiohttp.ClientError as exc:
            reason = denied_reason(exc)
            if reason is not None:
                raise self._refused(tool, reason) from None
            raise CustomToolError(
                f"{tool.name}: cannot reach the app ({type(exc).__name__}: {exc})", "unreachable"
            ) from None
        duration_ms = (time.perf_counter() - started) * 1000
        text = raw.decode("utf-8", "replace")
        if not 200 <= status < 300:
            raise CustomToolError(
                f"{tool.name}: the app answered HTTP {status}: {text[:500]}", "http_error", status=status
            )
        structured: dict[str, Any] | None = None
        parsed: Any = None
        if text.strip():
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                if tool.output_schema is not None:
                    raise CustomToolError(
                        f"{tool.name}: the app's answer is not JSON: {text[:200]}",
                        "invalid_answer",
                        status=status,
                    ) from None
        if tool.output_schema is not None:
            problems = self._check(tool.output_schema, parsed)
            if problems:
                raise CustomToolError(
                    f"{tool.name}: the app's answer does not match the output schema: " + "; ".join(problems),
                    "invalid_answer",
                    status=status,
                )
        if isinstance(parsed, dict):
            structured = parsed
        log.info(
            "custom_tool.called tool=%s agent=%s status=%s ms=%.1f", tool.name, agent, status, duration_ms
        )
        return ToolOutcome(text=text, structured=structured, duration_ms=duration_ms, status=status)
