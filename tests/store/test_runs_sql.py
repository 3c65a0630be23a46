"""The runs table's claim: priority then due time, `not_before`, concurrency keys, and why runs wait."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from coral_server.store import SqliteStore, runs_sql
from coral_server.store.migrations import apply_migrations
from coral_server.store.runs import Run


def run(created: float = 100.0, **extra: Any) -> Run:
    values: dict[str, Any] = {
        "id": 0,
        "kind": "pipeline",
        "trigger": "cron",
        "status": "pending",
        "spec": {"pipeline": []},
        "display_name": "r",
        "created_at": created,
    }
    values.update(extra)
    return Run(**values)


async def admit(store: SqliteStore, *runs: Run) -> list[int]:
    return [(await store.runs.admit(r, None)).id for r in runs]


async def test_new_columns_round_trip(store: SqliteStore) -> None:
    (rid,) = await admit(
        store, run(not_before=150.0, concurrency_key="k", dedupe_key="d", retryable=False, task_id="t")
    )
    got = await store.runs.get(rid)
    assert got is not None
    assert (got.not_before, got.concurrency_key, got.dedupe_key, got.retryable) == (150.0, "k", "d", False)
    assert got.waiting_reason == "not_before"  # admitted with a due time ahead
    got.status, got.retry_pending = "running", True
    await store.runs.update(got)
    again = await store.runs.get(rid)
    assert again is not None and again.retry_pending and again.status == "running"


async def test_claim_order_is_priority_then_due_time_then_id(store: SqliteStore) -> None:
    ids = await admit(
        store,
        run(created=100.0, priority=5),  # 0
        run(created=90.0, priority=5),  # 1: older, same priority: before 0
        run(created=120.0, priority=1),  # 2: highest priority
        run(created=50.0, priority=5, not_before=95.0),  # 3: due at 95 (after 90, before 100)
        run(created=100.0, priority=5),  # 4: ties with 0 on time: id decides
    )
    claimed = await store.runs.claim("me", cap=10, limit=10, now=1000.0)
    assert [r.id for r in claimed] == [ids[2], ids[1], ids[3], ids[0], ids[4]]


async def test_due_times_closer_than_json_keeps_are_claimed_in_order(store: SqliteStore) -> None:
    later, earlier = await admit(store, run(created=1_796_002_805.123457), run(created=1_796_002_805.123456))
    claimed = await store.runs.claim("me", cap=10, limit=10, now=2e9)
    assert [r.id for r in claimed] == [earlier, later]


async def test_runs_the_caller_holds_are_answered_by_id_in_claim_order(store: SqliteStore) -> None:
    ids = await admit(store, *(run(created=100.0 + i, priority=9 - i) for i in range(4)))
    claimed, _, _ = await store.runs.claim_next("me", 10, 10, now=1000.0, known={ids[0], ids[2]})
    assert [c if isinstance(c, int) else c.id for c in claimed] == [ids[3], ids[2], ids[1], ids[0]]
    assert [type(c) for c in claimed] == [Run, int, Run, int]
    read = [c for c in claimed if isinstance(c, Run)]
    assert all((r.owner, r.waiting_reason) == ("me", None) for r in read)
    for run_id in ids:  # held or read, every one is claimed in the store
        stored = await store.runs.get(run_id)
        assert stored is not None and stored.owner == "me"


async def test_a_claim_reads_past_the_runs_whose_key_filled_up_in_it(store: SqliteStore) -> None:
    keyed = await admit(store, *(run(concurrency_key="k", priority=1) for _ in range(4)))
    free = await admit(store, run(priority=5), run(priority=6))
    claimed = await store.runs.claim("me", cap=3, limit=3, now=1000.0)
    assert [r.id for r in claimed] == [keyed[0], *free]


async def test_runs_not_yet_due_wait_and_say_so(store: SqliteStore) -> None:
    early, late = await admit(store, run(not_before=200.0), run(not_before=300.0))
    assert await store.runs.claim("me", cap=5, limit=5, now=199.0) == []
    waiting = await store.runs.get(early)
    assert waiting is not None and waiting.waiting_reason == "not_before" and waiting.owner is None
    assert await store.runs.next_not_before(199.0) == 200.0
    claimed = await store.runs.claim("me", cap=5, limit=5, now=200.0)
    assert [r.id for r in claimed] == [early]
    assert claimed[0].waiting_reason is None
    assert await store.runs.next_not_before(200.0) == 300.0
    # Without a time the claim ignores due times (the jobs dispatcher's old call).
    assert [r.id for r in await store.runs.claim("me", cap=5, limit=5)] == [late]


async def test_a_concurrency_key_admits_one_busy_run_by_default_the_rest_wait_in_priority_order(
    store: SqliteStore,
) -> None:
    low, high, free, other = await admit(
        store,
        run(concurrency_key="k", priority=5),
        run(concurrency_key="k", priority=2),
        run(priority=9),
        run(concurrency_key="other", priority=9),
    )
    claimed = await store.runs.claim("me", cap=10, limit=10, now=1000.0)
    assert sorted(r.id for r in claimed) == sorted([high, free, other])
    waiting = await store.runs.get(low)
    assert waiting is not None and waiting.waiting_reason == "concurrency_key"
    # Still busy: nothing more for k.
    assert await store.runs.claim("me", cap=10, limit=10, now=1000.0) == []
    running = next(r for r in claimed if r.id == high)
    running.status = "completed"
    await store.runs.update(running)
    assert [r.id for r in await store.runs.claim("me", cap=10, limit=10, now=1000.0)] == [low]


async def test_a_key_limit_of_two(store: SqliteStore) -> None:
    ids = await admit(store, *(run(concurrency_key="k", priority=p) for p in (3, 1, 2, 1)))
    claimed = await store.runs.claim("me", 10, 10, now=1000.0, key_limits={"k": 2})
    assert [r.id for r in claimed] == [ids[1], ids[3]]  # the two priority-1 runs
    states = {i: await store.runs.get(i) for i in ids}
    assert {i: s.waiting_reason for i, s in states.items() if s is not None and s.owner is None} == {
        ids[0]: "concurrency_key",
        ids[2]: "concurrency_key",
    }


async def test_runs_beyond_the_cap_wait_for_capacity(store: SqliteStore) -> None:
    first, second = await admit(store, run(priority=1), run(priority=2))
    claimed = await store.runs.claim("me", cap=1, limit=1, now=1000.0)
    assert [r.id for r in claimed] == [first]
    waiting = await store.runs.get(second)
    assert waiting is not None and waiting.waiting_reason == "capacity"


async def test_waiting_reasons_follow_what_holds_each_run_back(store: SqliteStore) -> None:
    busy, keyed, later = await admit(
        store,
        run(concurrency_key="k", priority=1),
        run(concurrency_key="k", priority=2),
        run(not_before=500.0),
    )
    assert [r.id for r in await store.runs.claim("me", cap=1, limit=1, now=100.0)] == [busy]

    async def reasons() -> dict[int, str | None]:
        return {i: r.waiting_reason for i in (keyed, later) if (r := await store.runs.get(i)) is not None}

    assert await reasons() == {keyed: "concurrency_key", later: "not_before"}
    done = await store.runs.get(busy)
    assert done is not None
    done.status = "completed"
    await store.runs.update(done)
    # The key is free, the due time has come, but the cap (0 free slots here) holds both.
    assert await store.runs.claim("me", cap=0, limit=1, now=500.0) == []
    assert await reasons() == {keyed: "capacity", later: "capacity"}


def test_the_claim_walks_the_queue_index(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "plan.db", isolation_level=None)
    apply_migrations(conn)
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM runs INDEXED BY runs_queue WHERE status = 'pending'"
        " AND owner IS NULL AND (not_before IS NULL OR not_before <= 1) ORDER BY priority,"
        " COALESCE(not_before, created_at), id"
    ).fetchall()
    conn.close()
    assert "runs_queue" in str(plan) and "TEMP B-TREE" not in str(plan)


async def test_updates_asked_for_together_are_written_together_each_with_its_outcome(
    store: SqliteStore,
) -> None:
    ids = await admit(store, *(run() for _ in range(4)))
    got = [r for i in ids if (r := await store.runs.get(i)) is not None]
    first, second, third, fourth = got
    first.status, second.status = "running", "running"
    fourth.status = "killed"
    waits = [
        store.runs.queue_update(first),
        store.runs.queue_update(second),
        store.runs.queue_update(fourth, ("running",)),  # it is pending: refused alone
    ]
    first.status, first.finished_at = "completed", 150.0
    waits.append(store.runs.queue_update(first))  # replaces the first one's update in the batch
    third.display_name = "renamed"
    waits.append(store.runs.queue_update(third))
    outcomes = await asyncio.gather(*waits, return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == [
        "NoneType",
        "NoneType",
        "RunChanged",
        "NoneType",
        "NoneType",
    ]
    stored = {i: await store.runs.get(i) for i in ids}
    assert [(s.status, s.finished_at, s.display_name) for s in stored.values() if s is not None] == [
        ("completed", 150.0, "r"),
        ("running", None, "r"),
        ("pending", None, "renamed"),
        ("pending", None, "r"),
    ]


async def test_many_updates_in_one_batch_take_several_statements(store: SqliteStore) -> None:
    n = runs_sql._UPDATE_ROWS * 2 + 7
    ids = await admit(store, *(run() for _ in range(n)))
    got = [r for i in ids if (r := await store.runs.get(i)) is not None]
    for r in got:
        r.status, r.owner = "running", f"me-{r.id}"
    await asyncio.gather(*(store.runs.update(r) for r in got))
    stored = await store.runs.active()
    assert len(stored) == n and all(r.status == "running" and r.owner == f"me-{r.id}" for r in stored)


def test_the_values_written_are_the_mutable_columns_in_order() -> None:
    r = run(result={"x": 1}, auto_accepts=[{"q": "a"}], retryable=False, owner="o", output="tail")
    r.id = 7
    assert runs_sql.mutable(r) == (*(runs_sql._value(r, c) for c in runs_sql._MUTABLE), 7)
    fields = run(display_name="")
    assert runs_sql.admission(fields, 9)[1:] == tuple(runs_sql._value(fields, c) for c in runs_sql._ADMITTED)
    assert fields.display_name == "Task #9" and fields.waiting_reason == "capacity"


async def test_admitted_ids_never_reuse_one_given_before(store: SqliteStore) -> None:
    ids = await admit(store, run(), run())
    await store.runs._writer.write(lambda c: c.execute("DELETE FROM runs WHERE id = ?", (ids[-1],)))
    (again,) = await admit(store, run())
    assert again == ids[-1] + 1
