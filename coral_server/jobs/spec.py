"""A one-time job's request: every documented parameter with its default, checked field by field."""

from __future__ import annotations

import shlex
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator

MAX_DURATION_S = 7 * 24 * 3600
MAX_AUTO_ACCEPTS = 1000


class JobSpecInvalid(Exception):
    """A job request with bad fields; `problems` are (field, message) pairs, the first one names it."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        field, message = problems[0]
        super().__init__(message if message.startswith("'") else f"'{field}': {message}")
        self.problems = problems


class JobSpec(BaseModel):
    """`POST /api/tasks/run`'s body (unknown fields are ignored, as the original system does)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    prompt: str = Field(min_length=1, max_length=1_000_000)
    repo_path: str = Field(min_length=1, max_length=4096)
    agent_type: str = "claude"
    base_branch: str = Field(default="main", min_length=1, max_length=255)
    create_worktree: StrictBool = True
    cleanup_worktree: StrictBool = True
    max_duration_s: StrictInt = Field(default=3600, ge=1, le=MAX_DURATION_S)
    flags: str = Field(default="", max_length=10_000)
    display_name: str | None = Field(default=None, max_length=200)
    webhook_url: str | None = Field(default=None, max_length=2048)
    auto_accept: StrictBool = False
    max_auto_accepts: StrictInt = Field(default=10, ge=0, le=MAX_AUTO_ACCEPTS)
    # For agent_type "coral": the session to run (as for POST /api/v1/local/session).
    session: dict[str, Any] | None = None

    @field_validator("prompt", "repo_path", "base_branch", "flags", "display_name")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("flags")
    @classmethod
    def _splittable(cls, value: str) -> str:
        try:
            shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split as a shell would: {exc}") from None
        return value

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        return value

    @property
    def flag_list(self) -> list[str]:
        return shlex.split(self.flags)


def parse_job(body: dict[str, Any], agent_types: frozenset[str]) -> JobSpec:
    """The job request in `body`, or `JobSpecInvalid` naming every bad field."""
    problems: list[tuple[str, str]] = []
    for name in ("prompt", "repo_path"):
        if body.get(name) is None or body.get(name) == "":
            problems.append((name, f"'{name}' is required"))
    try:
        spec = JobSpec.model_validate(body)
    except ValidationError as exc:
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "(body)"
            if not any(name == f for f, _ in problems):
                problems.append((name, err["msg"].removeprefix("Value error, ")))
        raise JobSpecInvalid(problems) from None
    if problems:
        raise JobSpecInvalid(problems)
    if spec.agent_type not in agent_types:
        known = ", ".join(sorted(agent_types))
        raise JobSpecInvalid([("agent_type", f"unknown agent type {spec.agent_type!r}; known: {known}")])
    if spec.agent_type == "coral" and not spec.session:
        raise JobSpecInvalid([("session", "agent_type 'coral' needs a 'session' (a session request)")])
    return spec
