"""Executes one-time jobs: a worktree, the coding-agent CLI in it, its prompts, its end, the work kept.

One job run: the worktree is made (or the repository used in place), the agent's CLI is started by
the supervisor (headless, or on a pseudo-terminal when it may ask for permission), its output is the
run's output, permission prompts are answered (auto-accept up to the cap) or put to a human through
the run's `waiting_input` state, and whatever way it ends (done, error, timeout, kill, shutdown) the
work is committed to the run's branch and the worktree is removed when asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coral_server.jobs.agents import AgentCli, AgentOutputError, Endpoint
from coral_server.jobs.prompts import READERS, ScreenState, TerminalScreen, TurnEnd, read_screen
from coral_server.jobs.recovery import recover_worktree
from coral_server.jobs.spec import JobSpec, JobSpecInvalid, parse_job
from coral_server.jobs.worktree import (
    DEFAULT_AUTHOR,
    GitAuthor,
    Worktree,
    WorktreeError,
    WorktreeResult,
    cleanup_worktree,
    create_worktree,
    finish_worktree,
    use_repository_in_place,
    validate_repository,
)
from coral_server.runs.model import Run
from coral_server.runs.service import Outcome, RunContext
from coral_server.runtimes import AgentLog, LaunchSpec, LogLine, Owner, Terminal
from coral_server.runtimes.pty import COLS, ROWS
from coral_server.sessions import SessionRequest, Sessions
from coral_server.sessions.errors import SessionRequestInvalid
from coral_server.supervision import Crew, Supervisor, Unit
from coral_server.webhooks.destinations import DestinationPolicy

log = logging.getLogger("coral_server.jobs")

SETTLE_S = 0.05  # how long a terminal screen is left to settle before it is read
ECHO_WAIT_S = 2.0  # how long typed text may take to show before Enter follows it anyway
# A prompt still on the screen this long after its answer was typed: the CLI was not yet reading its
# keys (a busy machine), so the same answer is typed again, at most MAX_RESENDS times.
RESEND_S = 5.0
MAX_RESENDS = 3


@dataclass(frozen=True, slots=True)
class AgentSetup:
    """One agent type as this server runs it: the CLI, where its binary is, its model API."""

    cli: AgentCli
    binary: str
    endpoint: Endpoint


@dataclass(frozen=True, slots=True)
class JobSettings:
    """What the server was told about jobs."""

    agents: Mapping[str, AgentSetup]
    allowed_roots: tuple[Path, ...] | None = None  # None: anywhere
    author: GitAuthor = DEFAULT_AUTHOR
    stop_grace_s: float = 5.0
    base_env: Mapping[str, str] = field(default_factory=dict)  # what CLIs may take from ours (PATH...)
    owner: str | None = None  # marks our worktrees' locks (the instance id)
    # agent_type "coral": a session request body -> the domain's request (400 naming fields if bad).
    parse_session: Callable[[Any], SessionRequest] | None = None
    # Where a job's status webhook may point (its session's webhooks: the session domain's policy).
    destinations: DestinationPolicy = field(default_factory=DestinationPolicy)


class JobExecutor:
    """The executor of runs of kind "job"."""

    def __init__(
        self, supervisor: Supervisor, settings: JobSettings, sessions: Sessions | None = None
    ) -> None:
        self.supervisor = supervisor
        self.settings = settings
        self.sessions = sessions

    @property
    def agent_types(self) -> frozenset[str]:
        coral = {"coral"} if self.sessions is not None and self.settings.parse_session else set()
        return frozenset(self.settings.agents) | coral

    async def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        job = parse_job(spec, self.agent_types)
        if job.webhook_url is not None:
            problem = await self.settings.destinations.check(job.webhook_url)
            if problem is not None:
                raise JobSpecInvalid([("webhook_url", f"destination not allowed: {problem}")])
        if job.agent_type == "coral" and self.settings.parse_session is not None:
            request = self.settings.parse_session(job.session)
            if self.sessions is not None:
                try:
                    await self.sessions.check_destinations(request)
                except SessionRequestInvalid as exc:
                    raise JobSpecInvalid([(f"session.{p.path}", p.message) for p in exc.problems]) from None
        await validate_repository(
            job.repo_path,
            base_branch=job.base_branch,
            create_worktree=job.create_worktree,
            allowed_roots=self.settings.allowed_roots,
        )
        return job.model_dump()

    async def recover(self, run: Run) -> dict[str, Any] | None:
        # Its CLI and whatever that started (a daemon that left the group) go before its work is
        # committed: nothing may still write in the worktree.
        await self.supervisor.reap(Owner("run", str(run.id)))
        job = JobSpec.model_validate(run.spec)
        if not job.create_worktree:
            return None
        result = await recover_worktree(
            job.repo_path,
            run.id,
            owner=self.settings.owner,
            remove=job.cleanup_worktree,
            author=self.settings.author,
        )
        return None if result is None else _worktree_fields(result)

    async def execute(self, run: Run, ctx: RunContext) -> Outcome:
        return await self.execute_job(JobSpec.model_validate(run.spec), run, ctx)

    async def execute_job(self, job: JobSpec, run: Run, ctx: RunContext) -> Outcome:
        """Execute `job` (a spec `validate` accepted) as `run`, or as a step of it (a pipeline's)."""
        try:
            if job.create_worktree:
                wt = await create_worktree(
                    job.repo_path,
                    run.id,
                    base_branch=job.base_branch,
                    allowed_roots=self.settings.allowed_roots,
                    owner=self.settings.owner,
                )
            else:
                wt = await use_repository_in_place(
                    job.repo_path, run.id, allowed_roots=self.settings.allowed_roots
                )
        except WorktreeError as exc:
            return Outcome("failed", "error", f"cannot prepare the worktree: {exc}")
        await ctx.note(worktree_path=str(wt.path), branch=wt.branch)
        outcome = Outcome("failed", "error", "the agent did not run")
        try:
            if job.agent_type == "coral":
                outcome = await self._session(run, ctx, job, wt)
            else:
                outcome = await self._cli(run, ctx, job, wt)
        finally:
            outcome.result = {**(outcome.result or {}), **await self._finish(wt, job)}
        return outcome

    async def _cli(self, run: Run, ctx: RunContext, job: JobSpec, wt: Worktree) -> Outcome:
        crew = self.supervisor.crew(Owner("run", str(run.id)))
        agent = self.settings.agents[job.agent_type]
        try:
            return await _Job(run, ctx, job, agent, wt, crew, self.settings.base_env).drive()
        finally:
            await crew.stop_all(self.settings.stop_grace_s)
            await crew.close()

    async def _session(self, run: Run, ctx: RunContext, job: JobSpec, wt: Worktree) -> Outcome:
        """A Coral session whose local agents work in the worktree; the run ends with the session."""
        assert self.sessions is not None and self.settings.parse_session is not None
        request = self.settings.parse_session(job.session)
        request.work_dir = wt.path
        request.annotations = {**request.annotations, "coral.run": str(run.id)}
        session = await self.sessions.create(request)
        await ctx.running()
        ctx.output(f"session {session.namespace}/{session.id} started\n")
        closed = asyncio.ensure_future(session.wait_closed())
        killed = asyncio.ensure_future(ctx.killed.wait())
        deadline = asyncio.ensure_future(ctx.service.clock.sleep(job.max_duration_s))
        try:
            await asyncio.wait({closed, killed, deadline}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (killed, deadline):
                task.cancel()
        if not closed.done():
            timed_out = deadline.done() and not deadline.cancelled()
            await session.close("ttl" if timed_out else "deleted", f"run {run.id} ended")
            await closed
        result: dict[str, Any] = {
            "session": {
                "namespace": session.namespace,
                "sessionId": session.id,
                "closeReason": session.close_reason,
                "agents": [
                    {"name": a.name, "status": a.status, "exitCode": a.exit_code, "error": a.error}
                    for a in session.agents.values()
                ],
                "threads": len(session.threads),
                "messages": sum(len(t.messages) for t in session.threads.values()),
            }
        }
        if ctx.killed.is_set():
            if ctx.kill_reason == "user_cancelled":
                return Outcome("killed", "user_cancelled", "killed by request", result)
            return Outcome("failed", ctx.kill_reason, "the server stopped", result)
        if session.close_reason == "ttl" and deadline.done() and not deadline.cancelled():
            return Outcome("killed", "timeout", f"the job ran longer than {job.max_duration_s} s", result)
        failed = [a.name for a in session.agents.values() if a.status == "failed"]
        if failed:
            return Outcome("failed", "agent_error", f"agents failed to start: {', '.join(failed)}", result)
        return Outcome("completed", "agent_done", None, result)

    async def _finish(self, wt: Worktree, job: JobSpec) -> dict[str, Any]:
        try:
            if job.cleanup_worktree and wt.isolated:
                result = await cleanup_worktree(wt, author=self.settings.author)
            else:
                result = await finish_worktree(wt, author=self.settings.author)
        except Exception as exc:
            log.exception("job.finish_failed run=%s", wt.run_id)
            return {"worktree_error": str(exc)}
        return _worktree_fields(result)


def _worktree_fields(result: WorktreeResult) -> dict[str, Any]:
    """What a run's result says of its work in git (after any ending, a crash's recovery included)."""
    return {
        "branch": result.branch,
        "head_sha": result.head_sha,
        "base_sha": result.base_sha,
        "commit_count": result.commit_count,
        "files_changed": [f.to_json() for f in result.files_changed],
        "auto_committed": result.auto_committed,
        "worktree": result.to_json(),
    }


class _Job:
    """One execution of a job's CLI: launch, watch output and prompts, race exit/kill/deadline."""

    def __init__(
        self,
        run: Run,
        ctx: RunContext,
        job: JobSpec,
        agent: AgentSetup,
        wt: Worktree,
        crew: Crew,
        base_env: Mapping[str, str],
    ) -> None:
        self.run, self.ctx, self.job, self.agent, self.wt, self.crew = run, ctx, job, agent, wt, crew
        self.base_env = base_env
        cli = agent.cli
        # A terminal when a permission prompt may come (or auto-accept is asked for) and the CLI's
        # screens are known; otherwise headless, JSON on stdout.
        self.interactive = cli.name in READERS and (
            job.auto_accept or not cli.skips_permissions(job.flag_list)
        )
        self.log = AgentLog(max_bytes=1024 * 1024)
        self.screen: TerminalScreen | None = None
        self.changed = asyncio.Event()
        self.unit: Unit | None = None
        self.stdout: list[str] = []
        self.home = crew.work_dir / "home"

    def _line(self, line: LogLine) -> None:
        if line.stream == "pty":
            if self.screen is not None:
                self.screen.feed(line.text.encode())
            self.ctx.output(line.text)
        else:
            if line.stream == "stdout":
                self.stdout.append(line.text)
            self.ctx.output(line.text + "\n")
        self.changed.set()

    def _spec(self, files_dir: Path) -> LaunchSpec:
        cli, agent = self.agent.cli, self.agent
        cli.prepare_home(self.home, self.wt.path, agent.endpoint)
        launch = cli.launch(
            binary=agent.binary,
            prompt=self.job.prompt,
            flags=self.job.flags,
            endpoint=agent.endpoint,
            home=self.home,
            mode="interactive" if self.interactive else "headless",
            base_env=self.base_env,
        )
        return LaunchSpec(
            owner=self.crew.owner,
            name="cli",
            command=launch.argv,
            cwd=self.wt.path,
            env=launch.env,
            pty=self.interactive,
        )

    async def drive(self) -> Outcome:
        self.log.listeners.append(self._line)
        started = asyncio.Event()

        async def running(unit: Unit) -> None:
            await self.ctx.running()
            started.set()

        self.unit = self.crew.launch("cli", "executable", self._spec, self.log, on_running=running)
        ended = asyncio.ensure_future(self.unit.ended.wait())
        killed = asyncio.ensure_future(self.ctx.killed.wait())
        deadline = asyncio.ensure_future(self.ctx.service.clock.sleep(self.job.max_duration_s))
        watcher = asyncio.ensure_future(self._watch(started)) if self.interactive else None
        try:
            await asyncio.wait({ended, killed, deadline}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (killed, deadline, watcher):
                if task is not None:
                    task.cancel()
        unit = self.unit
        if not ended.done():
            await self.crew.stop(unit)
            ended.cancel()
        if unit.status == "failed":
            return Outcome("failed", "error", unit.error)
        agent = self._result()
        result: dict[str, Any] = {
            "agent": agent,
            "exit_code": unit.exit_code,
            "mode": "interactive" if self.interactive else "headless",
        }
        if self.ctx.killed.is_set():
            reason = self.ctx.kill_reason
            if reason == "user_cancelled":
                return Outcome("killed", reason, "killed by request", result)
            return Outcome("failed", reason, "the server stopped", result)
        if deadline.done() and not deadline.cancelled():
            return Outcome(
                "killed", "timeout", f"the job ran longer than {self.job.max_duration_s} s", result
            )
        code = unit.exit_code
        if code == 0 and not (agent or {}).get("isError"):
            return Outcome("completed", "agent_done", None, result)
        tail = " | ".join(line.text.strip() for line in self.log.tail(3) if line.text.strip())[-500:]
        return Outcome("failed", "agent_error", f"the agent exited with code {code}: {tail}", result)

    def _result(self) -> dict[str, Any] | None:
        cli = self.agent.cli
        try:
            if self.interactive:
                found = cli.read_interactive_result(self.home, self.wt.path)
            else:
                found = cli.parse_headless("\n".join(self.stdout))
        except AgentOutputError:
            return None
        return None if found is None else found.to_json()

    async def _watch(self, started: asyncio.Event) -> None:
        """On the terminal: answer permission prompts, and end the session once the task is done."""
        await started.wait()
        assert self.unit is not None and self.unit.handle is not None
        handle = self.unit.handle
        if not isinstance(handle, Terminal):
            return
        terminal = handle

        def reply(data: str) -> None:  # the terminal's answers to the CLI's queries (cursor position)
            with contextlib.suppress(OSError):
                terminal.write(data.encode())

        self.screen = TerminalScreen(COLS, ROWS, answer=reply)
        self.screen.feed("".join(line.text for line in self.log.lines if line.stream == "pty").encode())
        accepted = 0
        answered: str | None = None  # the prompt last answered: not answered twice while it clears
        keys = b""  # its answer, typed again if the CLI did not take it
        typed_at = 0.0
        resends = 0
        loop = asyncio.get_running_loop()
        cli = self.agent.cli.name
        while True:
            if answered is not None and resends < MAX_RESENDS:
                # Woken by the screen, or RESEND_S after the answer when nothing moves.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(typed_at + RESEND_S):
                        await self.changed.wait()
            else:
                await self.changed.wait()
            self.changed.clear()
            await asyncio.sleep(SETTLE_S)  # let a screen that is being drawn settle
            reading = read_screen(cli, self.screen.lines())
            prompt = reading.prompt
            if reading.state is ScreenState.PERMISSION and prompt is not None:
                if prompt.text == answered:
                    if loop.time() - typed_at >= RESEND_S and resends < MAX_RESENDS:
                        resends += 1
                        log.warning("job.answer_retyped run=%s times=%s", self.run.id, resends)
                        terminal.write(keys)
                        typed_at = loop.time()
                    continue
                answered, resends = prompt.text, 0
                if self.job.auto_accept and accepted < self.job.max_auto_accepts:
                    accepted += 1
                    keys = prompt.yes_keys.encode()
                    terminal.write(keys)
                    typed_at = loop.time()
                    await self.ctx.auto_accepted(prompt.summary(), "yes")
                else:
                    answer = await self.ctx.wait_input(f"{prompt.summary()} - {prompt.question}")
                    keys = _answer_keys(answer, prompt.yes_keys, prompt.no_keys)
                    terminal.write(keys)
                    typed_at = loop.time()
                continue
            answered = None
            if (
                reading.state is ScreenState.DIALOG
                and reading.dialog is not None
                and reading.dialog.accept_keys
            ):
                terminal.write(reading.dialog.accept_keys.encode())
                continue
            if reading.idle and reading.turn_end is TurnEnd.INTERRUPTED:
                answer = await self.ctx.wait_input("The agent stopped: what should it do instead?")
                await self._submit(terminal, answer)
                continue
            if reading.idle and reading.turn_end is TurnEnd.DONE:
                with contextlib.suppress(OSError):
                    await self._submit(terminal, self.agent.cli.exit_command)
                return

    async def _submit(self, terminal: Terminal, text: str) -> None:
        """Type `text` into the CLI's input box and press Enter: at once, or once the text shows (or
        after ECHO_WAIT_S) for a CLI that takes text and Enter in one read as a paste."""
        if not self.agent.cli.enter_apart:
            terminal.write(_typed(text))
            return
        self.changed.clear()
        terminal.write(_typed(text)[:-1])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ECHO_WAIT_S):
                await self.changed.wait()
        await asyncio.sleep(SETTLE_S)
        terminal.write(b"\r")


def _typed(text: str) -> bytes:
    """Text typed into the CLI's input box and submitted (pasted, so newlines stay in it)."""
    if "\n" in text:
        return b"\x1b[200~" + text.encode() + b"\x1b[201~\r"
    return text.encode() + b"\r"


def _answer_keys(answer: str, yes: str, no: str) -> bytes:
    """A human's answer to a permission prompt: yes/no words pick the prompt's keys; a digit picks
    that option; anything else is typed as it is."""
    word = answer.strip().lower()
    if word in ("y", "yes"):
        return yes.encode()
    if word in ("n", "no"):
        return no.encode()
    if word.isdigit() and len(word) == 1:
        return word.encode()
    return _typed(answer)
