"""Scheduled tasks: their specs, the `Tasks` service (CRUD, actions, events) and the scheduler loop."""

from coral_server.tasks.errors import TaskCanceled, TaskNotFound, TaskReadOnly
from coral_server.tasks.loop import PIPELINE, TaskLoop, TaskSettings
from coral_server.tasks.service import TaskCreated, Tasks
from coral_server.tasks.spec import TaskSpec, parse_changes, parse_snooze, parse_task

__all__ = [
    "PIPELINE",
    "TaskCanceled",
    "TaskCreated",
    "TaskLoop",
    "TaskNotFound",
    "TaskReadOnly",
    "TaskSettings",
    "TaskSpec",
    "Tasks",
    "parse_changes",
    "parse_snooze",
    "parse_task",
]
