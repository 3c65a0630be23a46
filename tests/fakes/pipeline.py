"""A "pipeline" executor that runs nothing: the tasks tests' stand-in for the real pipeline executor.

`validate` checks the payload's shape as the real one does for the fields the tests use (a
`pipeline` list of steps whose `uses` is job, session or webhook) and fills `params`. Each run it
executes waits until the test ends it (`finish(run_id, outcome)`), or ends at once with `auto`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from coral_server.runs.service import Outcome, RunContext
from coral_server.scheduler import TaskFieldInvalid
from coral_server.store.runs import Run

STEP_KINDS = ("job", "session", "webhook")


async def done_unless_killed(awaited: asyncio.Future[Any], ctx: RunContext) -> bool:
    """Wait until `awaited` is done or the run is killed; whether `awaited` is done."""
    killed = asyncio.ensure_future(ctx.killed.wait())
    try:
        await asyncio.wait({awaited, killed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        killed.cancel()
    return awaited.done()


class FakePipeline:
    def __init__(self) -> None:
        self.started: list[Run] = []
        self.auto: Outcome | None = None
        self._outcomes: dict[int, asyncio.Future[Outcome]] = {}

    async def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        steps = spec.get("pipeline")
        if not isinstance(steps, list):
            raise TaskFieldInvalid([("payload.pipeline", "must be a list of steps")])
        for i, step in enumerate(steps):
            if not isinstance(step, dict) or step.get("uses") not in STEP_KINDS:
                raise TaskFieldInvalid([(f"payload.pipeline[{i}].uses", f"one of {', '.join(STEP_KINDS)}")])
        return {"params": dict(spec.get("params") or {}), "pipeline": steps}

    async def execute(self, run: Run, ctx: RunContext) -> Outcome:
        await ctx.running()
        self.started.append(run)
        if self.auto is not None:
            return self.auto
        outcome = self._outcomes.setdefault(run.id, asyncio.get_running_loop().create_future())
        if not await done_unless_killed(outcome, ctx):
            return Outcome("killed", ctx.kill_reason)
        return outcome.result()

    async def recover(self, run: Run) -> dict[str, Any] | None:
        return None

    def finish(self, run_id: int, outcome: Outcome | None = None) -> None:
        future = self._outcomes.setdefault(run_id, asyncio.get_running_loop().create_future())
        future.set_result(outcome or Outcome("completed", "agent_done"))

    def running(self) -> list[int]:
        """Ids of the runs started and not yet finished."""
        return [r.id for r in self.started if not (r.id in self._outcomes and self._outcomes[r.id].done())]
