"""Numbered schema migrations for the SQLite store, applied in order at open, each in its own transaction."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from coral_server.store.transaction import immediate


class SchemaTooNew(Exception):
    """The database was written by a newer server than this one."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        (
            """CREATE TABLE webhook_deliveries (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                url TEXT NOT NULL,
                headers TEXT NOT NULL,
                body BLOB NOT NULL,
                signature_header TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
                attempts INTEGER NOT NULL DEFAULT 0,
                max_attempts INTEGER NOT NULL,
                next_attempt_at REAL,
                last_error TEXT,
                last_status INTEGER,
                created_at REAL NOT NULL,
                delivered_at REAL
            )""",
            "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at)",
        ),
    ),
    Migration(
        2,
        (
            # What a delivery is about (e.g. "namespace/sessionId"), for listing one session's webhooks.
            "ALTER TABLE webhook_deliveries ADD COLUMN subject TEXT",
            "CREATE INDEX webhook_deliveries_subject ON webhook_deliveries (subject, created_at)",
            """CREATE TABLE webhook_attempts (
                delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
                number INTEGER NOT NULL,
                at REAL NOT NULL,
                status INTEGER,
                error TEXT,
                duration_ms REAL,
                PRIMARY KEY (delivery_id, number)
            )""",
        ),
    ),
    Migration(
        3,
        (
            # What the supervisor started (a process group or a container), so that the orphans of a
            # crashed instance can be killed at its next start.
            """CREATE TABLE processes (
                id TEXT PRIMARY KEY,
                instance TEXT NOT NULL,
                owner_kind TEXT NOT NULL,
                owner_id TEXT NOT NULL,
                name TEXT NOT NULL,
                runtime TEXT NOT NULL,
                pid INTEGER,
                proc_start INTEGER,
                container TEXT,
                started_at REAL NOT NULL
            )""",
            "CREATE INDEX processes_instance ON processes (instance, started_at)",
            # Live sessions and their journal (threads, messages, ... as opaque JSON), so that a crash
            # can be closed with an end report at the next start.
            """CREATE TABLE sessions (
                id TEXT PRIMARY KEY,
                namespace TEXT NOT NULL,
                instance TEXT NOT NULL,
                created_at_ms INTEGER NOT NULL,
                end_webhook BLOB,
                agents BLOB NOT NULL
            )""",
            "CREATE INDEX sessions_instance ON sessions (instance, created_at_ms)",
            """CREATE TABLE session_messages (
                session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                kind TEXT NOT NULL,
                body BLOB NOT NULL,
                PRIMARY KEY (session_id, seq)
            ) WITHOUT ROWID""",
        ),
    ),
    # Runs (one-time jobs now, scheduled tasks' runs next): one table, one state machine.
    Migration(
        4,
        (
            """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            trigger TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN
                ('pending', 'running', 'waiting_input', 'completed', 'failed', 'killed')),
            spec TEXT NOT NULL,
            display_name TEXT NOT NULL,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            exit_reason TEXT,
            error TEXT,
            result TEXT,
            worktree_path TEXT,
            branch TEXT,
            webhook_url TEXT,
            priority INTEGER NOT NULL DEFAULT 5,
            task_id TEXT,
            attempt INTEGER NOT NULL DEFAULT 1,
            owner TEXT,
            auto_accepts TEXT NOT NULL DEFAULT '[]',
            waiting_for TEXT,
            output TEXT NOT NULL DEFAULT ''
        )""",
            "CREATE INDEX runs_status ON runs (status, priority, id)",
            "CREATE INDEX runs_task ON runs (task_id, id)",
        ),
    ),
    # Scheduled tasks, and what the dispatcher needs to enforce their rules on runs: a due time
    # (`not_before`, a retry's backoff), concurrency and dedupe keys, why a pending run waits, and
    # whether a failed task run still awaits its retry decision (set with the final status, so a
    # crash between the failure and the retry loses no retry).
    Migration(
        5,
        (
            """CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            description TEXT NOT NULL,
            schedule_kind TEXT NOT NULL CHECK (schedule_kind IN ('cron', 'rrule', 'once', 'event')),
            schedule_expr TEXT,
            timezone TEXT NOT NULL DEFAULT 'UTC',
            payload TEXT NOT NULL,
            created_by TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 5 CHECK (priority BETWEEN 1 AND 9),
            max_retries INTEGER NOT NULL DEFAULT 3,
            backoff_strategy TEXT NOT NULL DEFAULT 'exponential_jitter',
            dedupe_key TEXT,
            dedupe_window_seconds INTEGER,
            concurrency_key TEXT,
            status TEXT NOT NULL CHECK (status IN ('active', 'paused', 'canceled')),
            next_fire_at REAL,
            snoozed_until REAL,
            snooze_reason TEXT,
            source TEXT NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'file')),
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            last_fire_at REAL,
            last_run_id INTEGER,
            fire_count INTEGER NOT NULL DEFAULT 0,
            skip_count INTEGER NOT NULL DEFAULT 0,
            last_skip_at REAL,
            last_skip_reason TEXT,
            version INTEGER NOT NULL DEFAULT 1
        )""",
            # Only armed tasks are in the due index (paused, canceled, ended and event tasks have none).
            "CREATE INDEX tasks_due ON tasks (next_fire_at) WHERE next_fire_at IS NOT NULL",
            "CREATE INDEX tasks_listing ON tasks (status, created_at)",
            "CREATE INDEX tasks_dedupe ON tasks (dedupe_key, created_by, created_at)"
            " WHERE dedupe_key IS NOT NULL",
            "CREATE INDEX tasks_topic ON tasks (schedule_expr, created_at) WHERE schedule_kind = 'event'",
            "ALTER TABLE runs ADD COLUMN not_before REAL",
            "ALTER TABLE runs ADD COLUMN concurrency_key TEXT",
            "ALTER TABLE runs ADD COLUMN dedupe_key TEXT",
            "ALTER TABLE runs ADD COLUMN waiting_reason TEXT",
            "ALTER TABLE runs ADD COLUMN retryable INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE runs ADD COLUMN retry_pending INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE runs ADD COLUMN retry_of INTEGER",
            "CREATE INDEX runs_dedupe ON runs (dedupe_key, created_at) WHERE dedupe_key IS NOT NULL",
            "CREATE INDEX runs_concurrency ON runs (concurrency_key, status)"
            " WHERE concurrency_key IS NOT NULL",
            "CREATE INDEX runs_retry_pending ON runs (id) WHERE retry_pending = 1",
            # The dispatcher's queue in claim order (priority, due time, id), and its waiting runs by
            # reason: a claim reads and updates only what it needs, however many runs are queued.
            "CREATE INDEX runs_queue ON runs (priority, COALESCE(not_before, created_at), id)"
            " WHERE status = 'pending' AND owner IS NULL",
            "CREATE INDEX runs_waiting ON runs (waiting_reason) WHERE status = 'pending' AND owner IS NULL",
            "CREATE INDEX runs_not_before ON runs (not_before)"
            " WHERE status = 'pending' AND owner IS NULL AND not_before IS NOT NULL",
            # The runs that hold a slot (runs_sql._BUSY_SQL, word for word), by key: counting them
            # reads only them, not the queue.
            "CREATE INDEX runs_busy ON runs (concurrency_key) WHERE"
            " (status IN ('running', 'waiting_input') OR (status = 'pending' AND owner IS NOT NULL))",
            # One retry per failed attempt, whoever creates it (the loop, or recovery after a crash).
            "CREATE UNIQUE INDEX runs_retry_of ON runs (retry_of) WHERE retry_of IS NOT NULL",
        ),
    ),
    # What a server asks of a run another server on the same store executes (a kill, an answer to
    # its question), carried out by that one at its next dispatcher pass; indexed by the server
    # asked, holding only the runs with a request on their way.
    Migration(
        6,
        (
            "ALTER TABLE runs ADD COLUMN kill_request TEXT",
            "ALTER TABLE runs ADD COLUMN input_request TEXT",
            "CREATE INDEX runs_requests ON runs (owner)"
            " WHERE kill_request IS NOT NULL OR input_request IS NOT NULL",
        ),
    ),
    # The due index in fire order (due time, priority, id): reading the next due tasks walks it and
    # stops at the batch, instead of sorting every task due at that time (a burst of 10,000) per read.
    Migration(
        7,
        (
            "DROP INDEX tasks_due",
            "CREATE INDEX tasks_due ON tasks (next_fire_at, priority, id) WHERE next_fire_at IS NOT NULL",
        ),
    ),
)

LATEST = MIGRATIONS[-1].version


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the database (0 for a new one)."""
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def apply_migrations(
    conn: sqlite3.Connection, migrations: tuple[Migration, ...] = MIGRATIONS, *, now: float | None = None
) -> list[int]:
    """Apply the migrations the database lacks; returns their versions (empty when up to date).

    Each is recorded with `now` (Unix s; default: the system time).

    `conn` must be in autocommit mode (isolation_level=None): each migration runs in its own
    `BEGIN IMMEDIATE … COMMIT`, so a crash leaves the schema at a whole version.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    latest = migrations[-1].version
    found = current_version(conn)
    if found > latest:
        raise SchemaTooNew(f"database schema version {found} is newer than this server's {latest}")
    applied: list[int] = []
    for migration in migrations:
        with immediate(conn):
            # Re-read inside the lock: another process may have migrated meanwhile.
            if migration.version <= current_version(conn):
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (migration.version, time.time() if now is None else now),
            )
        applied.append(migration.version)
    return applied
