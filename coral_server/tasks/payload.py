"""A task's payload: the pipeline format and its checks, before anything runs.

Payload: `{"params": {...}, "pipeline": [step, ...]}`. A step:

* `id` (required, unique; letters, digits, `_`, `-`), `uses`: `job` (a one-time job's request body,
  run in this run's worktree by the job executor), `session` (an `agentGraphRequest`: the step
  creates the session and waits for it to end; its output is the session's end report) or
  `webhook` (`{"url", "body"}`: a signed POST through the one delivery queue; its output is the
  delivery's outcome);
* `with`: the step's arguments, templated (see `coral_server.tasks.templates`);
* `save_as`: a second name under which later steps read the output (`${steps.<save_as>...}`);
* `if`: a boolean or a template; false skips the step;
* `timeout_seconds`: default 30 (a `job` step: its `max_duration_s`, which this lowers);
* `max_retries`: default 0; for a `session` the step is tried again, for a `webhook` they are the
  delivery's extra attempts; a `job` step is retried by the task (a new run), never in place, and a
  pipeline has at most one (a run has one worktree).

`parse_pipeline` checks the format and every template (a step reads only the steps before it);
the executor (`pipeline.PipelineExecutor`) checks further what a step without templates will do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from coral_server.jobs.spec import MAX_DURATION_S
from coral_server.scheduler.errors import TaskFieldInvalid
from coral_server.tasks.templates import RUN_FIELDS, Ref, TemplateInvalid, has_references, references

StepKind = Literal["job", "session", "webhook"]
STEP_KINDS: tuple[StepKind, ...] = ("job", "session", "webhook")
STEP_FIELDS = frozenset({"id", "uses", "with", "save_as", "if", "timeout_seconds", "max_retries"})
PAYLOAD_FIELDS = frozenset({"params", "pipeline"})
WEBHOOK_FIELDS = frozenset({"url", "body"})
MAX_STEPS = 50
MAX_STEP_RETRIES = 10
_JOB_STEP = "\0job"  # in the names seen so far: the index of the job step (never a valid name)
_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True, slots=True)
class Step:
    """One checked step of a pipeline."""

    index: int
    id: str
    uses: StepKind
    args: Any  # `with`, still templated
    save_as: str | None = None
    condition: bool | str | None = None  # `if`
    timeout_s: float | None = None  # as given; None: the kind's default
    max_retries: int = 0

    @property
    def field(self) -> str:
        return f"payload.pipeline[{self.index}]"


@dataclass(frozen=True, slots=True)
class Pipeline:
    params: dict[str, Any]
    steps: tuple[Step, ...]


def parse_pipeline(payload: Any) -> Pipeline:
    """The pipeline of a task's payload, or `TaskFieldInvalid` naming every wrong field
    (`payload.pipeline[1].uses`...). Checks the format and the templates; the arguments of a step
    without templates are checked further by `PipelineExecutor.validate`."""
    problems: list[tuple[str, str]] = []
    if not isinstance(payload, Mapping):
        raise TaskFieldInvalid([("payload", "expected an object {params, pipeline}")])
    for name in sorted(set(payload) - PAYLOAD_FIELDS):
        problems.append((f"payload.{name}", "unknown field (a payload has params and pipeline)"))
    params = payload.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        problems.append(("payload.params", "expected an object"))
        params = {}
    raw_steps = payload.get("pipeline")
    if not isinstance(raw_steps, list) or not raw_steps:
        problems.append(("payload.pipeline", "expected a non-empty list of steps"))
        raise TaskFieldInvalid(problems)
    if len(raw_steps) > MAX_STEPS:
        problems.append(("payload.pipeline", f"at most {MAX_STEPS} steps"))
    steps: list[Step] = []
    names: dict[str, int] = {}  # step ids and save_as names -> the index of their step
    for index, raw in enumerate(raw_steps):
        step = _parse_step(index, raw, names, dict(params), problems)
        if step is not None:
            steps.append(step)
    if problems:
        raise TaskFieldInvalid(problems)
    return Pipeline(dict(params), tuple(steps))


def _parse_step(
    index: int, raw: Any, names: dict[str, int], params: dict[str, Any], problems: list[tuple[str, str]]
) -> Step | None:
    at = f"payload.pipeline[{index}]"
    if not isinstance(raw, Mapping):
        problems.append((at, "expected an object {id, uses, with, ...}"))
        return None
    before = len(problems)
    for name in sorted(set(raw) - STEP_FIELDS):
        problems.append((f"{at}.{name}", f"unknown field; a step has {', '.join(sorted(STEP_FIELDS))}"))
    step_id = raw.get("id")
    if not isinstance(step_id, str) or not _ID.fullmatch(step_id):
        problems.append((f"{at}.id", "required: a name of letters, digits, '_' or '-' (at most 64)"))
        step_id = None
    elif step_id in names:
        problems.append((f"{at}.id", f"duplicate step name {step_id!r} (also step {names[step_id]})"))
    uses = raw.get("uses")
    if uses not in STEP_KINDS:
        problems.append(
            (f"{at}.uses", f"unknown step type {uses!r}; expected one of {', '.join(STEP_KINDS)}")
        )
    save_as = raw.get("save_as")
    if save_as is not None:
        if not isinstance(save_as, str) or not _ID.fullmatch(save_as):
            problems.append((f"{at}.save_as", "a name of letters, digits, '_' or '-' (at most 64)"))
        elif save_as in names or save_as == step_id:
            problems.append((f"{at}.save_as", f"name {save_as!r} is already used by a step"))
    condition = raw.get("if")
    if condition is not None and not isinstance(condition, (bool, str)):
        problems.append((f"{at}.if", "expected a boolean or a template string"))
    timeout = raw.get("timeout_seconds")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 < timeout <= MAX_DURATION_S
    ):
        problems.append(
            (f"{at}.timeout_seconds", f"expected a number of seconds, above 0, at most {MAX_DURATION_S}")
        )
    retries = raw.get("max_retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_STEP_RETRIES:
        problems.append((f"{at}.max_retries", f"expected an integer from 0 to {MAX_STEP_RETRIES}"))
    elif uses == "job" and retries:
        problems.append(
            (
                f"{at}.max_retries",
                "a job step is not retried in place (its worktree is the run's): "
                "the task's max_retries retry the run",
            )
        )
    args = raw.get("with", {})
    if not isinstance(args, Mapping):
        problems.append((f"{at}.with", "expected an object"))
    elif uses == "webhook":
        _check_webhook_args(at, args, problems)
    if uses == "job" and _JOB_STEP in names:
        problems.append(
            (
                f"{at}.uses",
                f"at most one job step per pipeline (a run has one worktree): step {names[_JOB_STEP]} is one",
            )
        )
    if uses == "job":
        names.setdefault(_JOB_STEP, index)
    _check_templates(at, args, condition, names, params, problems)
    if step_id is not None:
        names.setdefault(step_id, index)
    if isinstance(save_as, str):
        names.setdefault(save_as, index)
    if len(problems) > before:
        return None
    return Step(
        index=index,
        id=cast(str, step_id),
        uses=cast(StepKind, uses),
        args=dict(args),
        save_as=save_as,
        condition=condition,
        timeout_s=None if timeout is None else float(timeout),
        max_retries=retries,
    )


def _check_webhook_args(at: str, args: Mapping[str, Any], problems: list[tuple[str, str]]) -> None:
    for name in sorted(set(args) - WEBHOOK_FIELDS):
        problems.append((f"{at}.with.{name}", "unknown field; a webhook step has url and body"))
    url = args.get("url")
    if not isinstance(url, str) or not url:
        problems.append((f"{at}.with.url", "required: the URL to POST to"))
    elif not has_references(url):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append((f"{at}.with.url", "must be an http(s) URL"))


def _check_templates(
    at: str,
    args: Any,
    condition: Any,
    names: Mapping[str, int],
    params: Mapping[str, Any],
    problems: list[tuple[str, str]],
) -> None:
    for where, value in ((f"{at}.with", args), (f"{at}.if", condition)):
        try:
            for place, ref in references(value):
                problem = _ref_problem(ref, names, params)
                if problem is not None:
                    problems.append((where + place, problem))
        except TemplateInvalid as exc:
            problems.append((where + exc.at, exc.message))


def _ref_problem(ref: Ref, names: Mapping[str, int], params: Mapping[str, Any]) -> str | None:
    if ref.root == "steps":
        name = ref.path[0]
        if name not in names:
            return f"{ref.text}: no earlier step is named {name!r} (a step reads only the steps before it)"
    elif ref.root == "params" and ref.path and ref.path[0] not in params:
        return f"{ref.text}: payload.params has no {ref.path[0]!r}"
    elif ref.root == "run" and ref.path[0] not in RUN_FIELDS:  # pragma: no cover - parse refuses it
        return f"{ref.text}: unknown run field"
    return None
