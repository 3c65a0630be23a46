"""The supervisor: launches processes and containers for an owner, watches their exits, stops them.

A `Crew` is everything one owner runs (a session's agents, a run's coding-agent CLI): its units, its
deadline (a session's TTL, a run's maximum duration), its work directory, and the tasks that watch
them. Every unit that starts is recorded in the store until it ends, so the orphans of a crashed
server are found and killed at the next start-up (`Supervisor.reap_orphans`).

Every local process a unit starts also carries a mark in its environment (`marks.py`): what left the
unit's process group (a CLI's `setsid` daemon) is found by it and killed when its crew closes, when
the server stops (`Supervisor.close`) and when a restarted server reaps what a dead one left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from coral_server.clock import Clock
from coral_server.runtimes import AgentHandle, AgentLog, LaunchFailed, LaunchSpec, Owner, Runtime
from coral_server.store.processes import ProcessRecord, ProcessStore
from coral_server.supervision.marks import NAME as MARK_VARIABLE
from coral_server.supervision.marks import Mark, kill_marked, marked_env, process_start

log = logging.getLogger("coral_server.supervision")

UnitStatus = Literal["pending", "running", "exited", "failed"]
# Builds the unit's launch spec in its own work directory (may write option files there).
Prepare = Callable[[Path], LaunchSpec]
UnitCallback = Callable[["Unit"], Awaitable[None] | None]


@dataclass(slots=True, eq=False)
class Unit:
    """One supervised process or container and what is known of it."""

    owner: Owner
    name: str
    runtime: str
    log: AgentLog
    status: UnitStatus = "pending"
    exit_code: int | None = None
    error: str | None = None
    started_at: int | None = None
    ended_at: int | None = None
    handle: AgentHandle | None = None
    record_id: str | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # set once its end is recorded

    @property
    def pid(self) -> int | None:
        return None if self.handle is None else self.handle.pid


async def _call(callback: UnitCallback | None, unit: Unit) -> None:
    if callback is not None:
        result = callback(unit)
        if result is not None:
            await result


class Crew:
    """The units, deadline, tasks and work directory of one owner; `close()` releases them all."""

    def __init__(self, supervisor: Supervisor, owner: Owner, work_dir: Path) -> None:
        self.owner = owner
        self.work_dir = work_dir
        self.units: dict[str, Unit] = {}
        self._supervisor = supervisor
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped: set[int] = set()  # ids of the handles already stopped

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """Run `coro` as a task this crew owns (cancelled by `cancel_tasks`)."""
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.owner.id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def launch(
        self,
        name: str,
        runtime: str,
        prepare: Prepare,
        log: AgentLog,
        *,
        on_running: UnitCallback | None = None,
        on_ended: UnitCallback | None = None,
    ) -> Unit:
        """Start a unit in the background; `on_running` once it runs, `on_ended` once it has ended
        (exited, or failed to start: a launch that cannot complete always ends with an error)."""
        unit = Unit(self.owner, name, runtime, log)
        self.units[name] = unit
        self.spawn(self._supervisor._run(self, unit, prepare, on_running, on_ended), f"unit:{name}")
        return unit

    def deadline(self, seconds: float, on_deadline: Callable[[], Awaitable[None]]) -> None:
        """Call `on_deadline` after `seconds` (by the supervisor's clock) unless the crew closes first."""

        async def expire() -> None:
            await self._supervisor.clock.sleep(seconds)
            await on_deadline()

        self.spawn(expire(), "deadline")

    async def stop_all(self, grace: float | None = None) -> None:
        """Stop every running unit: SIGTERM (or the engine's stop), SIGKILL after the grace period."""
        grace = self._supervisor.stop_grace_s if grace is None else grace
        handles = [u.handle for u in self.units.values() if u.handle is not None]
        handles = [h for h in handles if id(h) not in self._stopped]
        self._stopped.update(id(h) for h in handles)
        await asyncio.gather(*(h.stop(grace) for h in handles), return_exceptions=True)

    async def stop(self, unit: Unit, grace: float | None = None) -> None:
        """Stop one unit and wait (bounded) until its end is recorded."""
        if unit.ended_at is not None or unit.handle is None:
            return
        await unit.handle.stop(self._supervisor.stop_grace_s if grace is None else grace)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await unit.ended.wait()

    async def cancel_tasks(self) -> None:
        """Cancel every task of the crew but the caller's own, and wait for them."""
        me = asyncio.current_task()
        others = [t for t in self._tasks if t is not me]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def close(self) -> None:
        """Cancel the crew's tasks, kill whatever its units started (their process groups, and every
        process carrying their mark: what left the group too), forget their records and remove its
        work directory."""
        await self.cancel_tasks()
        # A launch that completed while the crew was being stopped has a handle nobody stopped.
        await self.stop_all(grace=0)
        await self._supervisor.sweep(self.owner)
        for unit in self.units.values():
            await self._supervisor._forget(unit)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(shutil.rmtree, self.work_dir, True)


class Supervisor:
    """Starts units through the runtimes, records them in the store while they live, reaps orphans."""

    def __init__(
        self,
        runtimes: Mapping[str, Runtime],
        clock: Clock,
        *,
        work_root: Path,
        stop_grace_s: float = 5.0,
        instance: str = "default",
        store: Callable[[], ProcessStore | None] = lambda: None,
    ) -> None:
        self.runtimes = runtimes
        self.clock = clock
        self.work_root = work_root
        self.stop_grace_s = stop_grace_s
        self.instance = instance
        self.owner = server_owner(instance)
        self._store = store
        pid = os.getpid()
        # What this server's marks name it by (the nonce: a pid and start time seen in another pid
        # namespace may be the same numbers).
        self._mark = Mark(instance, pid, process_start(pid) or 0, uuid.uuid4().hex[:16], "", "", "")

    def mark(self, owner: Owner, unit: str) -> Mark:
        """The mark of a unit this server starts for `owner` (in its processes' environment)."""
        return replace(self._mark, kind=owner.kind, owner=owner.id, unit=unit)

    async def sweep(self, owner: Owner | None = None) -> int:
        """Kill every process this server started for `owner` (for any owner: None) that still runs,
        wherever it went (found by its mark); returns how many."""
        ours = self._mark

        def match(mark: Mark) -> bool:
            if not mark.same_server(ours):
                return False
            return owner is None or (mark.kind, mark.owner) == (owner.kind, owner.id)

        return await asyncio.to_thread(kill_marked, match, self._homes(owner))

    def _homes(self, owner: Owner | None) -> tuple[str, ...]:
        """The owner's work directory: a process whose HOME lies in it is the owner's too (a run's
        CLI has its HOME there), mark or not."""
        return () if owner is None else (str(self.work_root / f"{owner.kind}s" / owner.id),)

    async def reap(self, owner: Owner | None = None) -> int:
        """Kill what dead servers of this instance started for `owner` (any owner: None) and left
        running, found by their marks; a live server's processes (another on the same data dir, or
        another instance) are never touched. With an owner (one whose server is dead), also what
        has its HOME in the owner's work directory. Returns how many."""
        instance = self.instance

        def match(mark: Mark) -> bool:
            if mark.instance != instance or mark.server_alive():
                return False
            return owner is None or (mark.kind, mark.owner) == (owner.kind, owner.id)

        killed = await asyncio.to_thread(kill_marked, match, self._homes(owner))
        if killed:
            log.warning("supervisor.reaped_marked count=%s instance=%s owner=%s", killed, instance, owner)
        return killed

    async def close(self) -> None:
        """At shutdown, after the crews closed: kill anything this server started that still runs."""
        killed = await self.sweep()
        if killed:
            log.warning("supervisor.killed_leftovers count=%s instance=%s", killed, self.instance)

    def crew(self, owner: Owner) -> Crew:
        """A new crew for `owner`, working under `<work_root>/<kind>s/<id>`."""
        return Crew(self, owner, self.work_root / f"{owner.kind}s" / owner.id)

    async def _run(
        self,
        crew: Crew,
        unit: Unit,
        prepare: Prepare,
        on_running: UnitCallback | None,
        on_ended: UnitCallback | None,
    ) -> None:
        unit.started_at = self.clock.now_ms()
        try:
            spec = prepare(crew.work_dir / unit.name)
            if spec.image is None:  # a local process: its descendants are found by the mark
                inherited = os.environ.get(MARK_VARIABLE)
                spec = replace(spec, env=marked_env(spec.env, self.mark(unit.owner, unit.name), inherited))
            unit.handle = await self.runtimes[unit.runtime].launch(spec, unit.log)
        except LaunchFailed as exc:
            unit.status, unit.error = "failed", str(exc)
        except OSError as exc:
            unit.status, unit.error = "failed", f"cannot prepare the agent: {exc}"
        except Exception as exc:  # whatever a runtime raises ends the launch visibly, never "pending"
            unit.status, unit.error = "failed", f"launch failed: {type(exc).__name__}: {exc}"
            log.exception("unit.launch_error owner=%s unit=%s", unit.owner.id, unit.name)
        else:
            unit.status = "running"
            # Told first, before anything awaits: its output is already being read, and whoever
            # follows the unit must hear that it started before they hear what it printed.
            started = on_running(unit) if on_running is not None else None
            await self._record(unit)
            log.info(
                "unit.started owner=%s unit=%s pid=%s container=%s",
                unit.owner.id,
                unit.name,
                unit.handle.pid,
                (unit.handle.container_id or "")[:12] or None,
            )
            if started is not None:
                await started
            unit.exit_code = await unit.handle.wait()
            unit.status = "exited"
            log.info("unit.exited owner=%s unit=%s code=%s", unit.owner.id, unit.name, unit.exit_code)
            await self._forget(unit)
        if unit.status == "failed":
            log.warning("unit.launch_failed owner=%s unit=%s error=%s", unit.owner.id, unit.name, unit.error)
        unit.ended_at = self.clock.now_ms()
        unit.ended.set()
        await _call(on_ended, unit)

    async def _record(self, unit: Unit) -> None:
        store = self._store()
        handle = unit.handle
        if store is None or handle is None or (handle.pid is None and handle.container_id is None):
            return
        record = ProcessRecord(
            id=uuid.uuid4().hex,
            instance=self.owner,
            owner_kind=unit.owner.kind,
            owner_id=unit.owner.id,
            name=unit.name,
            runtime=unit.runtime,
            pid=handle.pid,
            proc_start=None if handle.pid is None else process_start(handle.pid),
            container=handle.container_id,
            started_at=self.clock.time(),
        )
        try:
            await store.add(record)
        except Exception:
            log.exception("unit.record_failed owner=%s unit=%s", unit.owner.id, unit.name)
        else:
            unit.record_id = record.id

    async def _forget(self, unit: Unit) -> None:
        store = self._store()
        record_id, unit.record_id = unit.record_id, None
        if store is None or record_id is None:
            return
        try:
            await store.remove(record_id)
        except Exception:
            log.exception("unit.forget_failed owner=%s unit=%s", unit.owner.id, unit.name)

    async def reap_orphans(self, kill_container: Callable[[str], Awaitable[None]] | None = None) -> int:
        """Kill what dead servers left running (recorded units whose server is gone, then every process
        a dead server of this instance marked: what left its unit's group, or was never recorded as
        the server died mid-launch); returns how many.

        A process is killed only if it is still the one that was started (same pid and start time),
        so a reused pid is never hit; containers go through `kill_container`.
        """
        killed = await self._reap_recorded(kill_container) + await self.reap()
        if killed:
            log.warning("supervisor.reaped_orphans count=%s instance=%s", killed, self.instance)
        return killed

    async def _reap_recorded(self, kill_container: Callable[[str], Awaitable[None]] | None) -> int:
        store = self._store()
        if store is None:
            return 0
        killed = 0
        for record in await store.listing():
            if owner_alive(record.instance):
                continue  # another live server on the same data dir
            if record.pid is not None and record.proc_start is not None:
                killed += _kill_group(record.pid, record.proc_start)
            elif record.container is not None and kill_container is not None:
                with contextlib.suppress(Exception):
                    await kill_container(record.container)
                    killed += 1
            await store.remove(record.id)
        return killed


def server_owner(instance: str) -> str:
    """This server process as the owner of what it starts: `instance:pid:start-time`.

    Two servers on one data dir share the instance id; the pid and start time tell them apart, and
    tell a restarted server which records a dead one left.
    """
    pid = os.getpid()
    return f"{instance}:{pid}:{process_start(pid)}"


def owner_alive(owner: str) -> bool:
    """Whether the server process an owner string names still runs."""
    try:
        _instance, pid, start = owner.rsplit(":", 2)
        return str(process_start(int(pid))) == start
    except ValueError:
        return False


def _kill_group(pgid: int, leader_start: int) -> int:
    """SIGKILL the process group a recorded leader started, if it is still that group; 1 if killed."""
    leader = process_start(pgid)
    if leader is not None and leader != leader_start:
        return 0  # the pid was reused: not ours
    if leader is None:
        # The leader is gone; members it left keep its group id and started after it.
        members = [pid for pid in _pids() if _pgid(pid) == pgid and (process_start(pid) or 0) >= leader_start]
        if not members:
            return 0
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
        return 1
    return 0


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None
