"""The scheduler's input errors: a task field that is wrong, named, with what is wrong and where."""

from __future__ import annotations


class TaskFieldInvalid(ValueError):
    """One or more task fields are wrong; `problems` are (field, message) pairs, the first one names it.

    `field` is the request's own name (`schedule_expr`, `timezone`, `schedule_kind`,
    `backoff_strategy`…), so the API can answer a 400 that points at it.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        if not problems:
            raise ValueError("a TaskFieldInvalid needs at least one problem")
        self.problems = problems
        self.field, self.message = problems[0]
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))


class ScheduleInvalid(TaskFieldInvalid):
    """A schedule (kind, expression, time zone) that cannot be planned."""

    @classmethod
    def of(cls, field: str, message: str) -> ScheduleInvalid:
        return cls([(field, message)])
