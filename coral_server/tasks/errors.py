"""The tasks domain's errors: an unknown task, an action on a cancelled or read-only one."""

from __future__ import annotations


class TaskNotFound(LookupError):
    """No task has this id (the API answers 404)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task {task_id}")
        self.task_id = task_id


class TaskCanceled(Exception):
    """The task is cancelled, which is final: nothing more can be done to it (the API answers 409)."""

    def __init__(self, task_id: str, action: str) -> None:
        super().__init__(f"task {task_id} is canceled: cannot {action} it")
        self.task_id, self.action = task_id, action


class TaskReadOnly(Exception):
    """The task comes from a file (a job branch's CRONS.json): change the file, not the task (409)."""

    def __init__(self, task_id: str, action: str) -> None:
        super().__init__(f"task {task_id} comes from a file: cannot {action} it through the API")
        self.task_id, self.action = task_id, action
