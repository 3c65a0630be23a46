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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from coral_server.jobs.recovery import recover_worktree
from coral_server.jobs.spec import JobSpec, parse_job
from coral_server.jobs.worktree import (
    DEFAULT_AUTHOR,
    GitAuthor,
    Worktree,
    WorktreeError,
    cleanup_worktree,
    create_worktree,
    finish_worktree,
    use_repository_in_place,
    validate_repository,
)
from coral_server.runs.model import Run
from coral_server.runs.service import Outcome, RunContext
from coral_server.runtimes import AgentLog, LaunchSpec, LogLine, Owner, Terminal
from coral_server.supervision import Crew, Supervisor, Unit

log = logging.getLogger("coral_server.jobs")


class Screen(Protocol):
    """What an interactive CLI shows, rendered from its terminal output."""

    def feed(self, data: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Prompt:
    """A question the CLI asks on its screen: what it asks and the keys that answer yes / no."""

    question: str
    yes: bytes
    no: bytes


class CodingAgent(Protocol):
    """One coding-agent CLI (claude, gemini, codex): how to run it and read what it did."""

    name: str

    def interactive(self, flags: Sequence[str], auto_accept: bool) -> bool:
        """Whether this run needs a terminal (a permission prompt may come, or auto-accept is on)."""
        ...

    def command(self, prompt: str, flags: Sequence[str], *, interactive: bool) -> list[str]: ...

    def environment(self, home: Path) -> dict[str, str]:
        """The CLI's environment with `home` as its fresh HOME (prepared here: no first-run dialogs)."""
        ...

    def result(self, output: str) -> dict[str, Any] | None:
        """What its output says it did (final text, usage, cost...), if anything."""
        ...

    def screen(self) -> Screen: ...

    def prompt(self, screen: Screen) -> Prompt | None:
        """The permission prompt shown now, if any."""
        ...

    def finished(self, screen: Screen) -> bool:
        """Whether an interactive session is done with the task (idle again after working)."""
        ...

    def exit_keys(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class JobSettings:
    """What the server was told about jobs."""

    allowed_roots: tuple[Path, ...] | None = None  # None: anywhere
    author: GitAuthor = DEFAULT_AUTHOR
    stop_grace_s: float = 5.0


class JobExecutor:
    """The executor of runs of kind "job"."""

    def __init__(
        self, supervisor: Supervisor, agents: Mapping[str, CodingAgent], settings: JobSettings
    ) -> None:
        self.supervisor = supervisor
        self.agents = dict(agents)
        self.settings = settings

    async def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        job = parse_job(spec, frozenset(self.agents))
        await validate_repository(
            job.repo_path,
            base_branch=job.base_branch,
            create_worktree=job.create_worktree,
            allowed_roots=self.settings.allowed_roots,
        )
        return job.model_dump()

    async def recover(self, run: Run) -> dict[str, Any] | None:
        job = JobSpec.model_validate(run.spec)
        if not job.create_worktree:
            return None
        result = await recover_worktree(
            job.repo_path, run.id, remove=job.cleanup_worktree, author=self.settings.author
        )
        return None if result is None else {"worktree": result.to_json()}

    async def execute(self, run: Run, ctx: RunContext) -> Outcome:
        job = JobSpec.model_validate(run.spec)
        agent = self.agents[job.agent_type]
        try:
            if job.create_worktree:
                wt = await create_worktree(
                    job.repo_path,
                    run.id,
                    base_branch=job.base_branch,
                    allowed_roots=self.settings.allowed_roots,
                )
            else:
                wt = await use_repository_in_place(
                    job.repo_path, run.id, allowed_roots=self.settings.allowed_roots
                )
        except WorktreeError as exc:
            return Outcome("failed", "error", f"cannot prepare the worktree: {exc}")
        await ctx.note(worktree_path=str(wt.path), branch=wt.branch)
        crew = self.supervisor.crew(Owner("run", str(run.id)))
        outcome = Outcome("failed", "error", "the agent did not run")
        try:
            outcome = await _Job(run, ctx, job, agent, wt, crew).drive()
        finally:
            await crew.stop_all(self.settings.stop_grace_s)
            await crew.close()
            outcome.result = {**(outcome.result or {}), **await self._finish(wt, job)}
        return outcome

    async def _finish(self, wt: Worktree, job: JobSpec) -> dict[str, Any]:
        try:
            if job.cleanup_worktree and wt.isolated:
                result = await cleanup_worktree(wt, author=self.settings.author)
            else:
                result = await finish_worktree(wt, author=self.settings.author)
        except Exception as exc:
            log.exception("job.finish_failed run=%s", wt.run_id)
            return {"worktree_error": str(exc)}
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
        self, run: Run, ctx: RunContext, job: JobSpec, agent: CodingAgent, wt: Worktree, crew: Crew
    ) -> None:
        self.run, self.ctx, self.job, self.agent, self.wt, self.crew = run, ctx, job, agent, wt, crew
        self.interactive = agent.interactive(job.flag_list, job.auto_accept)
        self.log = AgentLog(max_bytes=1024 * 1024)
        self.screen = agent.screen() if self.interactive else None
        self.changed = asyncio.Event()
        self.unit: Unit | None = None
        self.output: list[str] = []

    def _line(self, line: LogLine) -> None:
        text = line.text if line.stream == "pty" else line.text + "\n"
        if line.stream == "stdout":
            self.output.append(line.text)
        if self.screen is not None and line.stream == "pty":
            self.screen.feed(text)
        self.ctx.output(text)
        self.changed.set()

    def _spec(self, files_dir: Path) -> LaunchSpec:
        home = files_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        command = self.agent.command(self.job.prompt, self.job.flag_list, interactive=self.interactive)
        return LaunchSpec(
            owner=self.crew.owner,
            name="cli",
            command=command,
            cwd=self.wt.path,
            env=self.agent.environment(home),
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
        if self.ctx.killed.is_set():
            reason = self.ctx.kill_reason
            if reason == "user_cancelled":
                return Outcome("killed", reason, "killed by request")
            return Outcome("failed", reason, "the server stopped")
        if deadline.done() and not deadline.cancelled():
            return Outcome("killed", "timeout", f"the job ran longer than {self.job.max_duration_s} s")
        result = self.agent.result("\n".join(self.output)) or {}
        code = unit.exit_code
        if code == 0:
            return Outcome("completed", "agent_done", None, {"agent": result, "exit_code": 0})
        tail = " | ".join(line.text for line in self.log.tail(3)).strip()[-500:]
        return Outcome(
            "failed",
            "agent_error",
            f"the agent exited with code {code}: {tail}",
            {"agent": result, "exit_code": code},
        )

    async def _watch(self, started: asyncio.Event) -> None:
        """On the terminal: answer permission prompts, and end the session once the task is done."""
        await started.wait()
        assert self.screen is not None and self.unit is not None and self.unit.handle is not None
        handle = self.unit.handle
        if not isinstance(handle, Terminal):
            return
        accepted = 0
        while True:
            await self.changed.wait()
            self.changed.clear()
            await asyncio.sleep(0.05)  # let a screen that is being drawn settle
            prompt = self.agent.prompt(self.screen)
            if prompt is not None:
                if self.job.auto_accept and accepted < self.job.max_auto_accepts:
                    accepted += 1
                    handle.write(prompt.yes)
                    await self.ctx.auto_accepted(prompt.question, "yes")
                else:
                    answer = await self.ctx.wait_input(prompt.question)
                    handle.write(_answer_keys(answer, prompt))
                continue
            if self.agent.finished(self.screen):
                with contextlib.suppress(OSError):
                    handle.write(self.agent.exit_keys())
                return


def _answer_keys(answer: str, prompt: Prompt) -> bytes:
    """A human's answer: yes/no words choose the prompt's keys; anything else is typed as it is."""
    word = answer.strip().lower()
    if word in ("y", "yes", "1"):
        return prompt.yes
    if word in ("n", "no", "3", "esc"):
        return prompt.no
    return answer.encode() + b"\r"
