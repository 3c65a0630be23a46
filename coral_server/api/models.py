"""The shapes of every HTTP request and response body (pydantic; the source of `schemas/` and the OpenAPI)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, NotRequired, Required

from jsonschema import SchemaError
from jsonschema.validators import validator_for
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
    with_config,
)
from typing_extensions import TypedDict

from coral_server.jobs.spec import JobSpec
from coral_server.registry import OptionTransport, RuntimeTransport
from coral_server.runs.model import ExitReason, RunStatus, Trigger
from coral_server.runs.service import OUTPUT_KEEP
from coral_server.store import DeliveryStatus

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _integral(value: Any) -> Any:
    # JSON Schema's `integer` is any number with a zero fractional part: 86.0 is one, 86.5 is not.
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer as JSON Schema means it: 86 and 86.0, never 86.5, "86" or true. (Constraints such as
# Field(gt=0) go before the BeforeValidator, where pydantic can apply and document them.)
JsonInt = Annotated[int, Strict(), BeforeValidator(_integral)]


class _In(BaseModel):
    # Unknown fields are ignored so apps written against newer or other servers keep working.
    model_config = ConfigDict(extra="ignore")


class RegistrySourceId(_In):
    type: str = "local"


class RegistryAgentId(_In):
    name: str = Field(min_length=1, description="Registry agent name.")
    version: str = Field(min_length=1, description="Registry agent version, or 'latest'.")
    source: str | None = Field(default=None, description="'local' (Coral Cloud spelling).")
    registrySourceId: RegistrySourceId | None = Field(default=None, description="Reference-server spelling.")

    @model_validator(mode="after")
    def _local_only(self) -> RegistryAgentId:
        source = self.source or (self.registrySourceId.type if self.registrySourceId else "local")
        if source != "local":
            raise ValueError(f"registry source {source!r} is not available on this server (only 'local')")
        return self


class Provider(_In):
    type: Literal["local"] = "local"
    runtime: Literal["executable", "docker", "external"] = Field(
        description="executable: a local child process; docker: a container; external: launched by you."
    )


class Plugin(_In):
    type: str


class AgentSpec(_In):
    id: RegistryAgentId
    name: str = Field(pattern=NAME_PATTERN, description="Unique instance name in the session.")
    provider: Provider
    description: str | None = Field(default=None, max_length=4096)
    systemPrompt: str | None = None
    blocking: bool = Field(default=False, strict=True)
    options: dict[str, Any] = Field(
        default_factory=dict, description='{NAME: {"type": ..., "value": ...}}, checked against the manifest.'
    )
    customToolAccess: list[str] = Field(default_factory=list)
    plugins: list[Plugin] = Field(default_factory=list)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("systemPrompt")
    @classmethod
    def _prompt_fits_the_environment(cls, prompt: str | None) -> str | None:
        if prompt is not None and "\0" in prompt:
            raise ValueError("must not contain a NUL character (it is passed in an environment variable)")
        return prompt


class HttpTransport(_In):
    type: Literal["http"]
    url: str = Field(
        pattern=r"^https?://", description="Webhook base URL; /{sessionId}/{agentName} is appended."
    )
    signatureHeader: str = "X-Coral-Signature"


def check_json_schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """Reject a schema that is not valid JSON Schema (its own metaschema says so)."""
    if schema is None:
        return None
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise ValueError(f"not a valid JSON Schema{' at ' + where if where else ''}: {exc.message}") from None
    return schema


class CustomToolSchema(_In):
    name: str | None = None
    description: str | None = None
    inputSchema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    outputSchema: dict[str, Any] | None = None

    _schemas = field_validator("inputSchema", "outputSchema")(check_json_schema)


class CustomTool(_In):
    transport: HttpTransport
    # Coral Cloud nests the definition in `schema`; the reference server puts the fields at the top.
    schema_: CustomToolSchema | None = Field(default=None, alias="schema")
    description: str | None = None
    inputSchema: dict[str, Any] | None = None
    outputSchema: dict[str, Any] | None = None

    _schemas = field_validator("inputSchema", "outputSchema")(check_json_schema)

    def definition(self) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        """(description, input schema, output schema) from whichever spelling was used."""
        nested = self.schema_
        description = self.description or (nested.description if nested else None) or ""
        input_schema = self.inputSchema or (nested.inputSchema if nested else None) or {"type": "object"}
        output_schema = self.outputSchema or (nested.outputSchema if nested else None)
        return description, input_schema, output_schema


class AgentGraphRequest(_In):
    agents: list[AgentSpec] = Field(min_length=1)
    groups: list[list[str]] = Field(default_factory=list)
    customTools: dict[str, CustomTool] = Field(default_factory=dict)

    @field_validator("customTools")
    @classmethod
    def _tool_names(cls, tools: dict[str, CustomTool]) -> dict[str, CustomTool]:
        for name in tools:
            if not TOOL_NAME.fullmatch(name):
                raise ValueError(f"custom tool name {name!r} must match {TOOL_NAME.pattern}")
            if name.startswith("coral_"):
                raise ValueError(f"custom tool name {name!r} uses the reserved prefix 'coral_'")
        return tools


class NamespaceRequest(_In):
    """A namespace to create (also the body of POST /api/v1/local/namespace)."""

    name: str = Field(pattern=NAME_PATTERN)
    deleteOnLastSessionExit: bool = Field(
        default=True, description="Remove the namespace when its last session is gone."
    )
    annotations: dict[str, str] = Field(default_factory=dict)


class NamespaceProvider(_In):
    type: Literal["create_if_not_exists", "use_existing"]
    namespaceRequest: NamespaceRequest | None = None
    name: str | None = Field(default=None, pattern=NAME_PATTERN)

    @model_validator(mode="after")
    def _shape(self) -> NamespaceProvider:
        if self.type == "create_if_not_exists" and self.namespaceRequest is None:
            raise ValueError("create_if_not_exists needs namespaceRequest {name, deleteOnLastSessionExit}")
        if self.type == "use_existing" and not self.name:
            raise ValueError("use_existing needs name")
        return self


class PersistenceMode(_In):
    """Both spellings: {mode: hold_after_exit, duration} and {type: HoldAfterExit, holdTime}."""

    mode: Literal["none", "hold_after_exit", "minimum_time"] | None = None
    type: Literal["None", "HoldAfterExit", "MinimumTime"] | None = None
    duration: int | None = Field(default=None, ge=0)
    holdTime: int | None = Field(default=None, ge=0)
    time: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_spelling(self) -> PersistenceMode:
        if self.mode is None and self.type is None:
            raise ValueError("persistenceMode needs 'mode' (or 'type')")
        return self

    def kind(self) -> Literal["none", "hold_after_exit", "minimum_time"]:
        if self.mode is not None:
            return self.mode
        names: dict[str, Literal["none", "hold_after_exit", "minimum_time"]] = {
            "None": "none",
            "HoldAfterExit": "hold_after_exit",
            "MinimumTime": "minimum_time",
        }
        return names[self.type or "None"]

    def hold_ms(self) -> int:
        """How long a closed session stays readable after it closes."""
        if self.kind() == "hold_after_exit":
            return self.duration if self.duration is not None else (self.holdTime or 0)
        return 0

    def minimum_ms(self) -> int:
        """How long after its creation a session stays readable, even once closed."""
        if self.kind() == "minimum_time":
            for value in (self.time, self.duration, self.holdTime):
                if value is not None:
                    return value
        return 0


class SessionEndWebhook(_In):
    url: str = Field(
        pattern=r"^https?://",
        description="Receives a signed POST with the session-end report when the session ends.",
    )


class WebhookSettings(_In):
    sessionEnd: SessionEndWebhook | None = None


class RuntimeSettings(_In):
    ttl: Annotated[int, Strict(), Field(gt=0), BeforeValidator(_integral)] | None = Field(
        default=None, description="Session time to live, in ms."
    )
    persistenceMode: PersistenceMode | None = None
    webhooks: WebhookSettings | None = None
    extendedEndReport: bool = False


class Execution(_In):
    mode: Literal["immediate", "defer"] = Field(
        default="immediate",
        description="defer: created pending_execution, nothing launched (the TTL does not run) until "
        "POST /api/v1/local/session/{namespace}/{sessionId} executes it.",
    )
    runtimeSettings: RuntimeSettings | None = None


class CreateSessionRequest(_In):
    agentGraphRequest: AgentGraphRequest
    namespaceProvider: NamespaceProvider | None = None
    execution: Execution | None = None
    sessionRuntimeSettings: RuntimeSettings | None = None
    annotations: dict[str, str] = Field(default_factory=dict)


# -- puppet: an app acting as one of a session's agents (bodies = the MCP tools' arguments) --------


class PuppetCreateThread(_In):
    threadName: str = Field(min_length=1, description="Name (topic) of the new thread.")
    participantNames: list[str] = Field(
        default_factory=list, description="Agents to add; the puppeted agent is added automatically."
    )


class PuppetCloseThread(_In):
    threadId: str = Field(min_length=1)
    summary: str = Field(default="", description="The thread's outcome.")


class PuppetSendMessage(_In):
    threadId: str = Field(min_length=1)
    content: str = Field(description="The message text.")
    mentions: list[str] = Field(default_factory=list, description="Participants to mention (woken up).")


class PuppetParticipant(_In):
    threadId: str = Field(min_length=1)
    participantName: str = Field(min_length=1)


class RetryDeliveryRequest(_In):
    attempts: JsonInt = Field(default=1, ge=1, le=100, description="How many more attempts.")


class RunInput(_In):
    text: str = Field(
        description='The answer: "yes"/"no" (or an option\'s digit) to a permission prompt, else text typed '
        "into the agent's input box and submitted."
    )


class PipelineStep(_In):
    """One step of a task's pipeline (see the README's "Scheduled tasks" for the template syntax)."""

    id: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$", description="Unique in the pipeline")
    uses: Literal["job", "session", "webhook"] = Field(
        description="job: a one-time job's request body (JobSpec); session: an agentGraphRequest "
        "(CreateSessionRequest), waited for until it ends; webhook: {url, body}, signed, through the "
        "delivery queue"
    )
    with_: dict[str, Any] = Field(
        default_factory=dict,
        alias="with",
        description="The step's arguments; strings may hold ${params.x}, ${steps.<id>.field}, "
        "${event.x}, ${run.id|attempt|trigger|task_id|topic|source} and ${now}",
    )
    save_as: str | None = Field(default=None, description="A second name later steps read it by")
    if_: bool | str | None = Field(
        default=None, alias="if", description="false (or a template whose value is false) skips the step"
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, description="Default 30 (a job step: its max_duration_s, which this lowers)"
    )
    max_retries: JsonInt = Field(
        default=0, ge=0, le=10, description="session: tries again; webhook: the delivery's extra attempts"
    )


class TaskPayload(_In):
    params: dict[str, Any] = Field(default_factory=dict, description="Read by ${params.x}")
    pipeline: list[PipelineStep] = Field(min_length=1, max_length=50, description="Run in order")


ScheduleKindName = Literal["cron", "rrule", "once", "event"]
BackoffName = Literal["exponential_jitter", "linear", "fixed"]


class CreateTaskRequest(_In):
    """`POST /tasks`: the reference's fields and defaults (`PUT /tasks/{id}` takes any of them)."""

    title: str = Field(min_length=1, max_length=200)
    description: str = Field(max_length=10_000)
    schedule_kind: ScheduleKindName
    schedule_expr: str | None = Field(
        default=None,
        description="cron: 5 fields, or 6 with seconds first; rrule: RFC 5545 (DTSTART honoured); "
        "once: ISO-8601 (in the future); event: the topic POST /events fires. Required but for event "
        "(whose topic it is)",
    )
    timezone: str = Field(default="UTC", description="An IANA zone, e.g. Europe/Chisinau")
    payload: TaskPayload
    created_by: str = Field(description="The creating agent's UUID")
    priority: JsonInt = Field(default=5, ge=1, le=9, description="1 runs first")
    max_retries: JsonInt = Field(default=3, ge=0, le=100)
    backoff_strategy: BackoffName = "exponential_jitter"
    dedupe_key: str | None = Field(default=None, max_length=200)
    dedupe_window_seconds: JsonInt | None = Field(default=None, ge=1)
    concurrency_key: str | None = Field(default=None, max_length=200)


class UpdateTaskRequest(_In):
    """`PUT /tasks/{id}`: any field of `POST /tasks`; those left out keep their value."""

    title: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    schedule_kind: ScheduleKindName | None = None
    schedule_expr: str | None = None
    timezone: str | None = None
    payload: TaskPayload | None = None
    created_by: str | None = None
    priority: JsonInt | None = Field(default=None, ge=1, le=9)
    max_retries: JsonInt | None = Field(default=None, ge=0, le=100)
    backoff_strategy: BackoffName | None = None
    dedupe_key: str | None = Field(default=None, max_length=200)
    dedupe_window_seconds: JsonInt | None = Field(default=None, ge=1)
    concurrency_key: str | None = Field(default=None, max_length=200)


class SnoozeRequest(_In):
    delay_seconds: JsonInt = Field(ge=1, le=7 * 24 * 3600, description="At most one week")
    reason: str | None = Field(default=None, max_length=500)


class PreviewRequest(_In):
    schedule_kind: ScheduleKindName
    schedule_expr: str | None = None
    timezone: str = "UTC"
    count: JsonInt = Field(default=5, ge=1, le=100, description="How many fire times")


class EventRequest(_In):
    topic: str = Field(min_length=1, max_length=200, description="Fires the active event tasks of this topic")
    payload: Any = Field(default=None, description="Given to each run as ${event.x}")
    source_agent_id: str | None = Field(default=None, description="Who sent it: ${run.source}")


# -- responses ----------------------------------------------------------------------------------
# TypedDicts, built as plain dicts by `api/views.py` (pydantic validation of a large session state
# costs about 7x its building). mypy checks every dict the views build against these shapes, pydantic
# makes the documented schemas of them, and extra="forbid" documents that nothing else is sent.

Wire = with_config(ConfigDict(extra="forbid"))
UnixMs = Annotated[int, Field(description="Unix ms")]
CloseReasonName = Literal[
    "ttl", "deleted", "all_agents_exited", "closed_by_agent", "server_shutdown", "server_restart"
]
AgentStatus = Literal["pending", "running", "exited", "failed"]
AgentGeneration = Literal["current", "1.0"]
LogStream = Literal["stdout", "stderr"]


@Wire
class CreateSessionResponse(TypedDict):
    namespace: str
    sessionId: str


@Wire
class SessionSummary(TypedDict):
    sessionId: str
    closing: bool


@Wire
class NamespaceSessions(TypedDict):
    namespace: str
    sessions: list[SessionSummary]


@Wire
class MessageState(TypedDict):
    id: str
    threadId: str
    senderName: str
    text: str
    timestamp: UnixMs
    mentionNames: list[str]


@Wire
class ThreadStatus(TypedDict):
    state: Literal["open", "closed"]
    summary: NotRequired[Annotated[str, Field(description="The thread's outcome (closed threads)")]]
    timestamp: NotRequired[Annotated[int | None, Field(description="When it closed, Unix ms")]]


@Wire
class ThreadState(TypedDict):
    id: str
    name: str
    creatorName: str
    participants: list[str]
    state: ThreadStatus
    timestamp: UnixMs
    messages: list[MessageState]


@Wire
class AgentIdentifier(TypedDict):
    name: str
    version: str
    source: str


@Wire
class AgentState(TypedDict):
    name: str
    registryAgentIdentifier: AgentIdentifier
    isConnected: bool
    isWaiting: bool
    description: str
    links: list[str]
    runtime: str
    generation: Annotated[
        AgentGeneration,
        Field(description="The agent surface it is served: its manifest's generation (external: current)."),
    ]
    status: AgentStatus
    exitCode: NotRequired[int]
    error: NotRequired[str]
    lastLogLines: NotRequired[
        Annotated[list[str], Field(description="The end of its output, once it exited with a code or error")]
    ]
    annotations: NotRequired[dict[str, str]]


@Wire
class SessionState(TypedDict):
    id: str
    namespace: str
    timestamp: UnixMs
    closing: bool
    status: Annotated[
        SessionStatus, Field(description="The reference server's session status (pending_execution...)")
    ]
    agents: list[AgentState]
    threads: list[ThreadState]
    closeReason: NotRequired[CloseReasonName]
    closeDetail: NotRequired[str]
    closedAt: NotRequired[UnixMs]
    annotations: NotRequired[dict[str, str]]


@Wire
class SessionSnapshot(SessionState):
    """The first event of a live stream: the session state, plus the last seq it reflects."""

    seq: int
    type: Literal["snapshot"]


@Wire
class LogLineOut(TypedDict):
    stream: LogStream
    text: str
    timestamp: UnixMs


@Wire
class AgentLogs(TypedDict):
    agent: str
    dropped: Annotated[int, Field(description="Lines dropped because the buffer was full.")]
    lines: list[LogLineOut]


@Wire
class AgentConnection(TypedDict):
    agent: str
    connectionUrl: str
    sseUrl: str


@Wire
class SourceIdentifier(TypedDict):
    type: Literal["local"]


@Wire
class RegistryAgentVersions(TypedDict):
    name: str
    versions: list[str]


@Wire
class RegistrySource(TypedDict):
    identifier: SourceIdentifier
    timestamp: UnixMs
    agents: list[RegistryAgentVersions]


@Wire
class ManifestIdentifier(TypedDict):
    name: str
    version: str
    registrySourceId: SourceIdentifier


@Wire
class ManifestInfo(TypedDict):
    description: NotRequired[str]
    summary: NotRequired[str]
    capabilities: list[str]
    identifier: ManifestIdentifier


@Wire
class ExecutableSectionOut(TypedDict):
    path: str
    arguments: list[str]
    transport: RuntimeTransport


@Wire
class DockerSectionOut(TypedDict):
    image: str
    command: NotRequired[list[str]]
    transport: RuntimeTransport


@Wire
class ManifestRuntimes(TypedDict):
    executable: NotRequired[ExecutableSectionOut]
    docker: NotRequired[DockerSectionOut]


@Wire
class OptionOut(TypedDict):
    type: str
    required: bool
    description: NotRequired[str]
    default: NotRequired[Annotated[Any, Field(description="Never shown for secret options; blobs as base64")]]
    display: NotRequired[dict[str, Any]]
    validation: NotRequired[dict[str, Any]]
    transport: OptionTransport
    secret: NotRequired[Literal[True]]
    base64: NotRequired[Literal[True]]


@Wire
class RegistryAgent(TypedDict):
    info: ManifestInfo
    runtimes: ManifestRuntimes
    options: dict[str, OptionOut]


@Wire
class RegistryAgentDetail(TypedDict):
    registryAgent: RegistryAgent
    restrictions: list[SourceIdentifier]


@Wire
class DeliveryAttemptOut(TypedDict):
    number: int
    at: UnixMs
    status: Annotated[int | None, Field(description="HTTP status; null when no answer came")]
    error: Annotated[str | None, Field(description="Why it failed; null for a 2xx")]
    durationMs: float | None


@Wire
class DeliveryOut(TypedDict):
    id: Annotated[str, Field(description="Also the webhook-id header of every attempt")]
    kind: str
    url: str
    subject: Annotated[str | None, Field(description='What it is about, e.g. "namespace/sessionId"')]
    status: DeliveryStatus
    attempts: int
    maxAttempts: int
    nextAttemptAt: Annotated[int | None, Field(description="Unix ms; null once delivered or failed")]
    lastStatus: int | None
    lastError: str | None
    createdAt: UnixMs
    deliveredAt: Annotated[int | None, Field(description="Unix ms; null until delivered")]


@Wire
class DeliveryDetail(DeliveryOut):
    payload: Annotated[Any, Field(description="The JSON body that is signed and sent")]
    attemptLog: list[DeliveryAttemptOut]


IsoTime = Annotated[str, Field(description="ISO 8601, UTC, ms")]
MaybeIsoTime = Annotated[str | None, Field(description="ISO 8601, UTC, ms; null until it happens")]


@Wire
class RunSubmitted(TypedDict):
    run_id: int
    status: Annotated[RunStatus, Field(description="pending: admitted; it starts when the cap allows")]


@Wire
class RunOut(TypedDict):
    """A run: the original jobs system's fields, then ours."""

    id: Annotated[int, Field(description="The run's id (the same as run_id)")]
    run_id: int
    status: RunStatus
    trigger_type: Annotated[
        Trigger,
        Field(
            description="What started it: api for POST /api/tasks/run; a scheduled task's cron, rrule, "
            "once, event (POST /events) or manual (run_now)"
        ),
    ]
    kind: Annotated[
        str,
        Field(
            description="What executes it: job (a coding-agent CLI in a worktree), pipeline (a task's steps)"
        ),
    ]
    display_name: str
    agent_type: Annotated[str | None, Field(description="claude, gemini, codex or coral")]
    worktree_path: Annotated[str | None, Field(description="{repo_path}_task_run_{id}; null until made")]
    branch: Annotated[str | None, Field(description="The run's branch, coral/run-{id}; null until made")]
    session_id: Annotated[str, Field(description="run-{id}")]
    scheduled_at: IsoTime
    created_at: IsoTime
    started_at: MaybeIsoTime
    finished_at: MaybeIsoTime
    duration_s: Annotated[float | None, Field(description="From start to finish; null until it ends")]
    exit_reason: Annotated[ExitReason | None, Field(description="Why it ended; null while active")]
    error_msg: str | None
    result: Annotated[
        dict[str, Any] | None,
        Field(
            description="Once it ended. A job: mode (headless or interactive), exit_code, agent (the CLI's "
            "final text, isError, usage, costUsd, turns, sessionId), branch, head_sha, base_sha, "
            "commit_count, files_changed, auto_committed (uncommitted work was committed to the branch), "
            "worktree. A pipeline: steps (each step's output by id) and trace (each step's status, "
            "times, error); while it runs, the steps done so far"
        ),
    ]
    waiting_for: Annotated[str | None, Field(description="What it asks while waiting_input")]
    auto_accepts: Annotated[
        list[dict[str, Any]],
        Field(description="Each permission prompt answered yes for it: {at, question, answer}"),
    ]
    task_id: Annotated[str | None, Field(description="The scheduled task (UUID) that made it; null: a job")]
    attempt: Annotated[int, Field(description="1, then 2... for a task run's retries")]
    priority: Annotated[int, Field(description="1 (first) to 9")]
    concurrency_key: Annotated[str | None, Field(description="Its task's: runs sharing it run N at a time")]
    waiting_reason: Annotated[
        Literal["not_before", "concurrency_key", "capacity"] | None,
        Field(
            description="Why it is still pending: its time has not come (a retry's backoff), its "
            "concurrency key has no free slot, or the server's cap has none"
        ),
    ]
    not_before: Annotated[str | None, Field(description="Not started before (a retry's backoff), ISO 8601")]
    retryable: Annotated[bool, Field(description="false: it failed in a way a retry cannot fix")]
    retry_of: Annotated[int | None, Field(description="The failed run this one retries")]
    prompt: str | None
    repo_path: str | None


@Wire
class RunDetail(RunOut):
    output: Annotated[
        str,
        Field(description=f"The last {OUTPUT_KEEP} characters of its terminal output, kept after it ends"),
    ]


@Wire
class RunSnapshot(RunDetail):
    """The first event of a run's live stream: the run as GET shows it, plus the last seq it reflects."""

    seq: int
    type: Literal["snapshot"]


@Wire
class RunSummary(TypedDict):
    """A run's lifecycle fields, as its events carry them (no result, no output)."""

    id: int
    run_id: int
    kind: str
    status: RunStatus
    trigger_type: Trigger
    display_name: str
    created_at: IsoTime
    started_at: MaybeIsoTime
    finished_at: MaybeIsoTime
    exit_reason: ExitReason | None
    error_msg: str | None


@Wire
class RunCreatedEvent(TypedDict):
    """A run was admitted (pending). On the run's stream and the server-wide feed."""

    seq: int
    type: Literal["run_created"]
    timestamp: UnixMs
    runId: int
    run: RunSummary


@Wire
class RunStatusEvent(TypedDict):
    """A run changed status; the last one of a run's stream is its final status."""

    seq: int
    type: Literal["run_status"]
    timestamp: UnixMs
    runId: int
    status: RunStatus
    previousStatus: RunStatus
    run: RunSummary


@Wire
class RunOutputEvent(TypedDict):
    """Terminal output of the run's agent, as it comes (only on the run's stream)."""

    seq: int
    type: Literal["run_output"]
    timestamp: UnixMs
    runId: int
    text: Annotated[str, Field(description="Raw output: terminal control sequences included on a PTY")]


@Wire
class RunInputNeededEvent(TypedDict):
    """The run waits for a human (status waiting_input): answer with POST .../input."""

    seq: int
    type: Literal["run_input_needed"]
    timestamp: UnixMs
    runId: int
    question: Annotated[
        str, Field(description="What it asks, e.g. `Bash: git commit -m x - Do you want to proceed?`")
    ]


@Wire
class RunAutoAcceptedEvent(TypedDict):
    """A permission prompt was answered yes for the run (auto_accept; counted against max_auto_accepts)."""

    seq: int
    type: Literal["run_auto_accepted"]
    timestamp: UnixMs
    runId: int
    question: Annotated[str, Field(description="What was asked, e.g. `Bash: echo hi > hi.txt`")]


# Every event of a run's stream after its snapshot (`type` tells which).
RUN_EVENTS = {
    "run_created": RunCreatedEvent,
    "run_status": RunStatusEvent,
    "run_output": RunOutputEvent,
    "run_input_needed": RunInputNeededEvent,
    "run_auto_accepted": RunAutoAcceptedEvent,
}


@Wire
class RunPage(TypedDict):
    runs: Annotated[list[RunOut], Field(description="Newest first, without their output")]
    next_before: Annotated[
        int | None, Field(description="Pass as ?before= for the next page; null when this page is not full")
    ]


@Wire
class TaskRun(RunOut):
    """A scheduled task's run: a run's fields, plus those the public tasks system's clients read."""

    lease_owner: Annotated[
        str | None,
        Field(description="The server that claimed it (instance:pid:start); null until one has"),
    ]
    leased_until: Annotated[
        str | None,
        Field(
            description="Always null: a claim here does not expire; it holds while its server lives, and "
            "the next start recovers the runs of a server that died"
        ),
    ]
    success: Annotated[
        bool | None, Field(description="true: completed; false: failed or killed; null while active")
    ]
    error: Annotated[
        str | None,
        Field(
            description="Why it failed (as error_msg); in GET /runs without include_errors=true, a "
            "placeholder saying so (error_msg still has it), as the public tasks system answers"
        ),
    ]
    output: Annotated[
        dict[str, Any] | None,
        Field(description="What its pipeline produced (as result): steps (each output by id) and trace"),
    ]


@Wire
class TaskRunList(TypedDict):
    """`GET /runs`: every task's runs, newest first, paged by offset."""

    items: list[TaskRun]
    total: Annotated[int, Field(description="Runs matching the filters")]
    limit: int
    offset: int
    has_more: bool


TaskStatusName = Literal["active", "paused", "canceled"]


@Wire
class TaskOut(TypedDict):
    """A scheduled task: the reference's fields, then its state."""

    id: Annotated[str, Field(description="UUID")]
    title: str
    description: str
    schedule_kind: ScheduleKindName
    schedule_expr: str | None
    timezone: str
    payload: dict[str, Any]
    created_by: str
    priority: int
    max_retries: int
    backoff_strategy: BackoffName
    dedupe_key: str | None
    dedupe_window_seconds: int | None
    concurrency_key: str | None
    status: TaskStatusName
    source: Annotated[Literal["api", "file"], Field(description="file: read-only here (CRONS.json)")]
    created_at: IsoTime
    updated_at: IsoTime
    next_fire_at: Annotated[str | None, Field(description="The next planned fire (ISO 8601, UTC)")]
    ended: Annotated[bool, Field(description="Active but its schedule has no more fires")]
    snoozed_until: MaybeIsoTime
    snooze_reason: str | None
    last_fire_at: MaybeIsoTime
    last_run_id: int | None
    fire_count: Annotated[int, Field(description="Runs created for it")]
    skip_count: Annotated[int, Field(description="Fires that created no run (misfire, dedupe, snooze)")]
    last_skip_at: MaybeIsoTime
    last_skip_reason: str | None


@Wire
class TaskDetail(TaskOut):
    next_fire_times: Annotated[list[str], Field(description="The next 5 fire times (ISO 8601, UTC)")]
    last_run: Annotated[TaskRun | None, Field(description="Its newest run")]
    run_counts: Annotated[dict[str, int], Field(description="Its runs per status")]
    runs_total: int


@Wire
class TaskCreated(TaskDetail):
    deduplicated: Annotated[
        bool,
        Field(
            description="true: an active task of the same creator with this dedupe_key exists (inside "
            "its window): this is that task (200), none was created"
        ),
    ]


@Wire
class TaskPage(TypedDict):
    items: list[TaskOut]
    total: Annotated[int, Field(description="Tasks matching the filters")]
    limit: int
    offset: int
    has_more: bool


@Wire
class TaskRunPage(TypedDict):
    items: Annotated[list[TaskRun], Field(description="Every attempt, newest first")]
    total: Annotated[int, Field(description="Its runs (of that status, if filtered)")]
    next_before: Annotated[
        int | None, Field(description="Pass as ?before= for the next page; null when this page is not full")
    ]


@Wire
class TaskRunStarted(TypedDict):
    task_id: str
    run: TaskRun


@Wire
class SchedulePreview(TypedDict):
    schedule_kind: ScheduleKindName
    schedule_expr: Annotated[str | None, Field(description="As it would be stored (an rrule gains DTSTART)")]
    timezone: str
    fire_times: Annotated[list[str], Field(description="The next fire times, ISO 8601 UTC (none for event)")]
    local_fire_times: Annotated[list[str], Field(description="The same, on the zone's wall clock")]


@Wire
class EventAccepted(TypedDict):
    topic: str
    triggered_tasks: Annotated[list[str], Field(description="The tasks it fired (UUIDs)")]
    runs: Annotated[list[TaskRun], Field(description="The runs it started, one per task fired")]


@Wire
class OkBody(TypedDict):
    ok: Literal[True]


@Wire
class FieldProblem(TypedDict):
    field: str
    message: str


@Wire
class ErrorBody(TypedDict):
    error: str  # the same text: the key clients of the jobs and tasks systems read
    message: str
    errors: NotRequired[list[FieldProblem]]


# -- the reference server's state shapes (its console and apps read these; `api/reference.py`) ------
# Timestamps are ISO 8601 strings there; absent fields are left out rather than null.


@Wire
class SessionStatus(TypedDict):
    type: Annotated[
        Literal["pending_execution", "executed", "closing"],
        Field(description="pending_execution: created with deferred execution, not executed yet"),
    ]
    executionTime: NotRequired[IsoTime]
    closingTime: NotRequired[IsoTime]


@Wire
class SessionStateBase(TypedDict):
    id: str
    timestamp: Annotated[str, Field(description="When this state was read (ISO 8601)")]
    namespace: str
    status: SessionStatus
    annotations: dict[str, str]


@Wire
class SessionThreadMessage(TypedDict):
    id: str
    threadId: str
    text: str
    senderName: str
    mentionNames: list[str]
    timestamp: IsoTime


@Wire
class SessionThreadState(TypedDict):
    state: Literal["open", "closed"]
    summary: NotRequired[str]
    timestamp: NotRequired[IsoTime]


@Wire
class SessionThread(TypedDict):
    id: str
    name: str
    creatorName: str
    participants: list[str]
    messages: list[SessionThreadMessage]
    state: SessionThreadState
    timestamp: IsoTime


@Wire
class PuppetThreadAnswer(TypedDict):
    """A puppet route's answer about a thread: the reference's `{thread}` (its thread shape)."""

    thread: SessionThread


@Wire
class PuppetMessageAnswer(TypedDict):
    """The puppet send-message answer: the reference's `{status, message}` (its message shape)."""

    status: Annotated[
        Literal["Message sent successfully"], Field(description="Always this text, as the reference")
    ]
    message: SessionThreadMessage


@Wire
class PuppetAgentAnswer(TypedDict):
    """The puppet stop-agent answer: the agent's state once it has ended."""

    agent: AgentState


@Wire
class RegistryAgentIdentifier(TypedDict):
    name: str
    version: str
    registrySourceId: SourceIdentifier


@Wire
class SessionAgentCommunicationStatus(TypedDict):
    type: Literal["thinking", "waiting_message", "sleeping"]


@Wire
class SessionAgentConnectionStatus(TypedDict):
    type: Literal["connected", "not_connected"]
    communicationStatus: NotRequired[SessionAgentCommunicationStatus]


@Wire
class SessionAgentStatus(TypedDict):
    type: Annotated[
        Literal["waiting", "running", "stopped"],
        Field(description="waiting: not launched yet; running; stopped: its process or container ended"),
    ]
    connectionStatus: NotRequired[SessionAgentConnectionStatus]
    startTime: NotRequired[IsoTime]


@Wire
class TokenUsage(TypedDict):
    inputTokens: int
    outputTokens: int


@Wire
class SessionAgentState(TypedDict):
    name: str
    registryAgentIdentifier: RegistryAgentIdentifier
    status: SessionAgentStatus
    description: str
    links: list[str]
    annotations: dict[str, str]
    tokensByModel: dict[str, TokenUsage]


@Wire
class SessionStateExtended(TypedDict):
    base: SessionStateBase
    agents: list[SessionAgentState]
    threads: list[SessionThread]


@Wire
class SessionNamespaceStateBase(TypedDict):
    name: str
    deleteOnLastSessionExit: bool
    annotations: dict[str, str]


@Wire
class SessionNamespaceStateExtended(TypedDict):
    base: SessionNamespaceStateBase
    sessions: list[SessionStateBase]


# -- the reference's event streams (`/ws/v1/events/lsm`, `/ws/v1/events/session/...`, `/ws/v1/logs`)
# One frame each; which fields come with which `type` is said in each field's description.

IsoEventTime = Annotated[str, Field(description="When it happened (ISO 8601, UTC, ms)")]
LsmEventType = Literal[
    "namespace_created",
    "namespace_closed",
    "session_created",
    "session_running",
    "session_closing",
    "session_closed",
]
SessionEventType = Literal[
    "runtime_started",
    "runtime_stopped",
    "agent_connected",
    "agent_disconnected",
    "agent_wait_start",
    "agent_wait_stop",
    "thread_created",
    "thread_message_sent",
    "thread_participant_added",
    "thread_participant_removed",
    "thread_closed",
    "agent_log",
    "custom_tool_called",
    "session_created",
    "session_running",
    "session_closing",
    "session_closed",
    "overflow",
]


class _Lifecycle(TypedDict, total=False):
    initialState: NotRequired[
        Annotated[SessionNamespaceStateBase, Field(description="namespace_created: the new namespace")]
    ]
    finalState: NotRequired[
        Annotated[SessionNamespaceStateBase, Field(description="namespace_closed: the namespace gone")]
    ]
    initialSessionState: NotRequired[
        Annotated[SessionStateBase, Field(description="session_created: the session (pending_execution)")]
    ]
    sessionState: NotRequired[
        Annotated[SessionStateBase, Field(description="session_running, session_closing: the session now")]
    ]
    finalSessionState: NotRequired[
        Annotated[SessionStateBase, Field(description="session_closed: the session, every agent stopped")]
    ]
    namespaceState: NotRequired[
        Annotated[SessionNamespaceStateBase, Field(description="session_*: the session's namespace")]
    ]
    agents: NotRequired[Annotated[list[str], Field(description="session_created: its agents' names (ours)")]]
    reason: NotRequired[
        Annotated[CloseReasonName, Field(description="session_closing, session_closed: why (ours)")]
    ]
    detail: NotRequired[Annotated[str, Field(description="session_closing, session_closed: more (ours)")]]


@Wire
class LocalSessionManagerEvent(_Lifecycle):
    """A namespace or session of the server was created, launched, began to close, or closed."""

    type: Required[LsmEventType]
    timestamp: Required[IsoEventTime]


@Wire
class SessionEvent(_Lifecycle, total=False):
    """Something happened in one session (the reference's events, then ours: agent_disconnected,
    agent_log, custom_tool_called, and the session's own lifecycle as on the server-wide stream)."""

    type: Required[SessionEventType]
    timestamp: Required[IsoEventTime]
    name: Annotated[str, Field(description="runtime_*, agent_*, thread_participant_*: the agent")]
    runtime: Annotated[str, Field(description="runtime_started: executable, docker or external")]
    status: Annotated[
        str | int, Field(description="runtime_stopped: exited or failed; custom_tool_called: HTTP status")
    ]
    exitCode: Annotated[int, Field(description="runtime_stopped: the process's exit code")]
    error: Annotated[str, Field(description="runtime_stopped: why it could not run")]
    thread: Annotated[SessionThread, Field(description="thread_created: the new thread")]
    message: Annotated[
        SessionThreadMessage,
        Field(description="thread_message_sent: the message; agent_wait_stop: the one that ended the wait"),
    ]
    threadId: Annotated[str, Field(description="thread_participant_*, thread_closed: the thread")]
    summary: Annotated[str, Field(description="thread_closed: the closing summary")]
    stream: Annotated[str, Field(description="agent_log: stdout or stderr")]
    text: Annotated[str, Field(description="agent_log: the line (secrets redacted)")]
    tool: Annotated[str, Field(description="custom_tool_called: the tool")]
    outcome: Annotated[str, Field(description="custom_tool_called: ok, http_error, invalid_arguments...")]
    durationMs: Annotated[float, Field(description="custom_tool_called: how long the call took")]


@Wire
class LoggingTag(TypedDict, total=False):
    """`namespace {namespace}`, `session {sessionId}`, `agent {name}` or `stdout {io: out|error}`."""

    type: Required[Literal["namespace", "session", "agent", "stdout"]]
    namespace: str
    sessionId: str
    name: str
    io: Literal["out", "error"]


@Wire
class LoggingEvent(TypedDict):
    """A line an agent printed: stdout at `info`, stderr at `warning` (secrets redacted)."""

    type: Literal["info", "warning", "error", "debug", "trace", "overflow"]
    timestamp: IsoEventTime
    text: NotRequired[str]
    tags: NotRequired[list[LoggingTag]]


REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "CreateSessionRequest": CreateSessionRequest,
    "PuppetCreateThread": PuppetCreateThread,
    "PuppetCloseThread": PuppetCloseThread,
    "PuppetSendMessage": PuppetSendMessage,
    "PuppetParticipant": PuppetParticipant,
    "RetryDeliveryRequest": RetryDeliveryRequest,
    "JobSpec": JobSpec,
    "RunInput": RunInput,
    "CreateTaskRequest": CreateTaskRequest,
    "UpdateTaskRequest": UpdateTaskRequest,
    "SnoozeRequest": SnoozeRequest,
    "PreviewRequest": PreviewRequest,
    "EventRequest": EventRequest,
    "NamespaceRequest": NamespaceRequest,
    "RuntimeSettings": RuntimeSettings,
}
# Each response shape that has its own file in schemas/ (nested shapes are in their parents' $defs).
RESPONSE_MODELS: dict[str, Any] = {
    "CreateSessionResponse": CreateSessionResponse,
    "NamespaceSessions": NamespaceSessions,
    "SessionSummary": SessionSummary,
    "SessionState": SessionState,
    "SessionSnapshot": SessionSnapshot,
    "ThreadState": ThreadState,
    "MessageState": MessageState,
    "AgentState": AgentState,
    "PuppetThreadAnswer": PuppetThreadAnswer,
    "PuppetMessageAnswer": PuppetMessageAnswer,
    "PuppetAgentAnswer": PuppetAgentAnswer,
    "AgentLogs": AgentLogs,
    "AgentConnection": AgentConnection,
    "RegistrySource": RegistrySource,
    "RegistryAgentDetail": RegistryAgentDetail,
    "DeliveryOut": DeliveryOut,
    "DeliveryDetail": DeliveryDetail,
    "RunSubmitted": RunSubmitted,
    "RunPage": RunPage,
    "RunDetail": RunDetail,
    "RunSnapshot": RunSnapshot,
    "RunCreatedEvent": RunCreatedEvent,
    "RunStatusEvent": RunStatusEvent,
    "RunOutputEvent": RunOutputEvent,
    "RunInputNeededEvent": RunInputNeededEvent,
    "RunAutoAcceptedEvent": RunAutoAcceptedEvent,
    "TaskCreated": TaskCreated,
    "TaskDetail": TaskDetail,
    "TaskPage": TaskPage,
    "TaskRunPage": TaskRunPage,
    "TaskRunStarted": TaskRunStarted,
    "TaskRun": TaskRun,
    "TaskRunList": TaskRunList,
    "SchedulePreview": SchedulePreview,
    "EventAccepted": EventAccepted,
    "OkBody": OkBody,
    "ErrorBody": ErrorBody,
    "SessionStateBase": SessionStateBase,
    "SessionStateExtended": SessionStateExtended,
    "SessionAgentState": SessionAgentState,
    "SessionThread": SessionThread,
    "SessionThreadMessage": SessionThreadMessage,
    "SessionNamespaceStateBase": SessionNamespaceStateBase,
    "SessionNamespaceStateExtended": SessionNamespaceStateExtended,
    "LocalSessionManagerEvent": LocalSessionManagerEvent,
    "SessionEvent": SessionEvent,
    "LoggingEvent": LoggingEvent,
}
