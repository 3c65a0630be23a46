"""LLM agent: a tool-calling loop against an OpenAI-compatible Chat Completions API.

Every Coral tool the server lists is offered to the model (OpenAI function format); each tool
call the model makes is run over MCP and its result (or error text) is given back to it.

Options (environment variables set by the Coral server from the manifest):
- BASE_URL (default https://api.openai.com/v1): requests go to {BASE_URL}/chat/completions.
- MODEL (default gpt-4o-mini).
- API_KEY (secret, required): sent as `Authorization: Bearer ...`, never logged.
- MAX_ITERATIONS (default 20): the agent exits 0 after that many model calls.
- EXTRA_USER_PROMPT (default ""): the task; empty means "wait for mentions and answer them".
- TEMPERATURE (optional float).

Each iteration the system prompt is rebuilt from `coral://instruction`, CORAL_PROMPT_SYSTEM
and a fresh read of `coral://state`. Model API failures are retried with back-off; when
they persist the agent exits 1 with one `error:` line on stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp.shared.exceptions import MCPError

from coral_server.agent import CoralAgent, ToolError, configure_logging, is_disconnect, result_text

log = logging.getLogger("coral.llm")

DEFAULT_USER_PROMPT = (
    "Collaborate with the other agents through Coral. Call coral_wait_for_mention to wait for "
    "messages that mention you; answer each one with coral_send_message in the same thread, "
    "mentioning its sender; then wait again."
)
NUDGE = (
    "You answered without calling a tool, so nobody saw it. Keep collaborating through the "
    "Coral tools: send your answer with coral_send_message, or call coral_wait_for_mention "
    "to wait for the next message."
)
SESSION_GONE_CODE = -32600  # INVALID_REQUEST: "Session terminated"
ATTEMPTS = 4
RETRY_DELAY_S = 0.5


class ModelAPIError(RuntimeError):
    """The model API kept failing."""


@dataclass(frozen=True)
class Settings:
    """The agent's options, read from the environment."""

    base_url: str
    model: str
    api_key: str
    max_iterations: int
    user_prompt: str
    temperature: float | None
    system_extra: str

    def __repr__(self) -> str:  # keeps the key out of any accidental log line
        return f"Settings(base_url={self.base_url!r}, model={self.model!r}, api_key='***')"

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> Settings:
        api_key = env.get("API_KEY", "").strip()
        if not api_key:
            raise ValueError("API_KEY is not set")
        try:
            max_iterations = int(env.get("MAX_ITERATIONS", "") or 20)
        except ValueError:
            raise ValueError("MAX_ITERATIONS must be an integer") from None
        if max_iterations < 1:
            raise ValueError("MAX_ITERATIONS must be at least 1")
        raw_temperature = env.get("TEMPERATURE", "").strip()
        try:
            temperature = float(raw_temperature) if raw_temperature else None
        except ValueError:
            raise ValueError("TEMPERATURE must be a number") from None
        return cls(
            base_url=(env.get("BASE_URL", "") or "https://api.openai.com/v1").rstrip("/"),
            model=env.get("MODEL", "") or "gpt-4o-mini",
            api_key=api_key,
            max_iterations=max_iterations,
            user_prompt=env.get("EXTRA_USER_PROMPT", "").strip() or DEFAULT_USER_PROMPT,
            temperature=temperature,
            system_extra=env.get("CORAL_PROMPT_SYSTEM", ""),
        )


def openai_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """MCP tools in the OpenAI `tools` (function) format."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description or "",
                "parameters": tool.input_schema or {"type": "object", "properties": {}},
            },
        }
        for tool in tools
    ]


def system_prompt(instruction: str, extra: str, state: str) -> str:
    parts = [instruction.strip(), extra.strip(), "# Current Coral state\n\n" + state.strip()]
    return "\n\n".join(part for part in parts if part)


class ModelClient:
    """Minimal Chat Completions client with retries."""

    def __init__(self, settings: Settings, http: httpx2.AsyncClient) -> None:
        self.settings = settings
        self.http = http

    def _redact(self, text: str) -> str:
        return text.replace(self.settings.api_key, "***")

    async def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.settings.model, "messages": messages}
        if tools:
            body["tools"] = tools
        if self.settings.temperature is not None:
            body["temperature"] = self.settings.temperature
        url = f"{self.settings.base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {self.settings.api_key}"}
        problem = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(RETRY_DELAY_S * 2 ** (attempt - 1))
            try:
                response = await self.http.post(url, json=body, headers=headers)
            except httpx2.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 300:
                    try:
                        data = response.json()
                        message = data["choices"][0]["message"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        problem = f"malformed response: {response.text[:300]}"
                    else:
                        if isinstance(message, dict):
                            return message
                        problem = "malformed response: choices[0].message is not an object"
                else:
                    problem = f"HTTP {response.status_code}: {response.text[:300]}"
            log.warning("model API attempt %d/%d failed: %s", attempt + 1, ATTEMPTS, self._redact(problem))
        raise ModelAPIError(self._redact(f"model API failed after {ATTEMPTS} attempts: {problem}"))


async def run_tool_call(agent: CoralAgent, call: Mapping[str, Any], known: set[str]) -> str:
    """Run one model tool call over MCP; returns the text to give back to the model."""
    function = call.get("function") or {}
    name = str(function.get("name", ""))
    if name not in known:
        return f"Error: unknown tool {name!r}; available tools: {', '.join(sorted(known))}"
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except ValueError as exc:
        return f"Error: the arguments are not valid JSON ({exc})"
    if not isinstance(arguments, dict):
        return "Error: the arguments must be a JSON object"
    try:
        result = await agent.call_raw(name, arguments)
    except ToolError as exc:
        return f"Error: {exc}"
    except MCPError as exc:
        if exc.code == SESSION_GONE_CODE:
            raise
        return f"Error: {exc.message}"
    text = result_text(result)
    if result.is_error:
        return f"Error: {text}"
    if not text and result.structured_content is not None:
        text = json.dumps(result.structured_content)
    return text


async def run(settings: Settings) -> None:
    async with CoralAgent.from_env() as agent, httpx2.AsyncClient(timeout=120.0) as http:
        model = ModelClient(settings, http)
        mcp_tools = await agent.tools()
        tools = openai_tools(mcp_tools)
        known = {tool.name for tool in mcp_tools}
        instruction = await agent.instruction()
        history: list[dict[str, Any]] = [{"role": "user", "content": settings.user_prompt}]
        log.info("agent %s: %d tools, up to %d model calls", agent.name, len(tools), settings.max_iterations)
        for iteration in range(settings.max_iterations):
            state = await agent.state()
            system = {"role": "system", "content": system_prompt(instruction, settings.system_extra, state)}
            message = await model.complete([system, *history], tools)
            calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
            entry: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
            if calls:
                entry["tool_calls"] = calls
            history.append(entry)
            log.info("iteration %d: %d tool call(s)", iteration + 1, len(calls))
            if not calls:
                history.append({"role": "user", "content": NUDGE})
                continue
            for call in calls:
                content = await run_tool_call(agent, call, known)
                history.append({"role": "tool", "tool_call_id": call.get("id", ""), "content": content})
        log.info("reached MAX_ITERATIONS (%d); exiting", settings.max_iterations)


async def amain() -> int:
    try:
        settings = Settings.from_environ(os.environ)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
    try:
        await run(settings)
    except asyncio.CancelledError:
        log.info("stopped by signal")
    except ModelAPIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BaseException as exc:
        if not is_disconnect(exc):
            raise
        log.info("the Coral server closed the connection (%s); exiting", type(exc).__name__)
    return 0


def main() -> None:
    configure_logging()
    raise SystemExit(asyncio.run(amain()))


if __name__ == "__main__":
    main()
