"""Size limits of sessions: how many, how large, how long; each broken one is a field of the request.

A session's cost grows with its agents, with the square of its groups (each member is linked to
every other one: 3,000 agents in one group are 9 million links, a 68 MB state) and with how long it
and its state live. An option value travels in an environment variable, which the OS caps (128 KiB
a string, about 2 MiB of environment and arguments in all): a larger one would be accepted here and
fail at launch ("Argument list too long").
"""

from __future__ import annotations

from dataclasses import dataclass

from coral_server.registry import ResolvedOption
from coral_server.registry.options import encode_env_value, encode_file_value
from coral_server.sessions.errors import RequestProblem, SessionError
from coral_server.sessions.spec import AgentRequest, SessionRequest

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Each limit is named after the server setting that sets it (see `config.Settings`)."""

    max_sessions: int = 1000
    max_agents_per_session: int = 500
    max_group_size: int = 200
    max_ttl_ms: int = 7 * DAY_MS
    max_hold_ms: int = DAY_MS
    max_option_bytes: int = 64 * 1024
    max_agent_options_bytes: int = 1024 * 1024


class TooManySessions(SessionError):
    """The server has as many live sessions as it may; one more can start once one ends."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the server already runs {limit} live sessions (setting max_sessions); try again when one ends"
        )


def request_problems(request: SessionRequest, limits: SessionLimits) -> list[RequestProblem]:
    """What a request asks beyond the limits on its shape and its times (checked before anything is
    built from it: the checks cost nothing, the building of an oversized session a lot)."""
    problems: list[RequestProblem] = []
    if len(request.agents) > limits.max_agents_per_session:
        problems.append(
            RequestProblem(
                request.agents_path,
                f"{len(request.agents)} agents; a session has at most {limits.max_agents_per_session} "
                "(setting max_agents_per_session)",
            )
        )
    for g, group in enumerate(request.groups):
        if len(group) > limits.max_group_size:
            problems.append(
                RequestProblem(
                    f"agentGraphRequest.groups[{g}]",
                    f"{len(group)} agents; a group has at most {limits.max_group_size} "
                    "(setting max_group_size)",
                )
            )
    if request.ttl_ms is not None and request.ttl_ms > limits.max_ttl_ms:
        problems.append(
            RequestProblem(
                f"{request.settings_path}.ttl",
                f"{request.ttl_ms} ms; at most {limits.max_ttl_ms} (setting max_ttl_ms)",
            )
        )
    for kept in (request.hold_after_exit_ms, request.minimum_time_ms):
        if kept > limits.max_hold_ms:
            problems.append(
                RequestProblem(
                    request.persistence_path,
                    f"keeps the state {kept} ms; at most {limits.max_hold_ms} (setting max_hold_ms)",
                )
            )
    return problems


def delivered_bytes(option: ResolvedOption) -> int:
    """The bytes an option's value takes where the agent gets it (its variable, or its files)."""
    spec = option.spec
    items = list(option.value) if isinstance(option.value, list) else [option.value]
    if spec.transport == "fs":
        return sum(len(encode_file_value(spec.item_type, item)) for item in items)
    text = ",".join(encode_env_value(spec.item_type, item, spec.base64) for item in items)
    return len(text.encode("utf-8"))


def agent_problems(
    req: AgentRequest, options: list[ResolvedOption], path: str, limits: SessionLimits
) -> list[RequestProblem]:
    """Option values and system prompt beyond the limits (each alone, and all of them together)."""
    problems: list[RequestProblem] = []
    sizes = [(f"{path}.options.{option.name}.value", delivered_bytes(option)) for option in options]
    if req.system_prompt is not None:
        sizes.append((f"{path}.systemPrompt", len(req.system_prompt.encode("utf-8"))))
    for where, size in sizes:
        if size > limits.max_option_bytes:
            problems.append(
                RequestProblem(
                    where, f"{size} bytes; at most {limits.max_option_bytes} (setting max_option_bytes)"
                )
            )
    total = sum(size for _, size in sizes)
    if not problems and total > limits.max_agent_options_bytes:
        problems.append(
            RequestProblem(
                f"{path}.options",
                f"{total} bytes of option values and system prompt; at most "
                f"{limits.max_agent_options_bytes} for one agent (setting max_agent_options_bytes)",
            )
        )
    return problems
