"""The waits of one HTTP request: a message they take is only gone once the agent got the answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from coral_server.sessions import Message
from coral_server.sessions.mailbox import Mailbox


class RequestWaits:
    """Tracks the waits running for one HTTP request.

    If the client goes away before the answer is written (it gave up on a long wait, or the
    connection broke), pending waits are cancelled and messages they took go back to the front of
    their mailbox, so the agent's next wait returns them: no message is lost.
    """

    __slots__ = ("_abandoned", "_confirmed", "_taken", "_tasks")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Message | None]] = set()
        self._taken: list[tuple[Mailbox, Message]] = []
        self._confirmed = False
        self._abandoned = False

    async def wait(self, mailbox: Mailbox, take: Awaitable[Message | None]) -> Message | None:
        """Run a mailbox take that `abandon()` can cancel; remember what it returned.

        The handler awaits the take's task itself: once a message arrives, the take finishes in one
        loop step and the handler resumes in the next (`WAKE_STEPS` in the mailbox module).
        """
        task = asyncio.ensure_future(take)
        self._tasks.add(task)
        try:
            message = await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._abandoned and task.cancelled() and (current is None or not current.cancelling()):
                return None  # abandon() stopped the take; the handler itself goes on
            # The handler itself was cancelled (e.g. its SSE stream ended): the take was cancelled
            # with it, unless it had finished already: then give back the message it holds.
            if not task.done():
                task.cancel()
            elif not task.cancelled() and task.exception() is None:
                found = task.result()
                if found is not None:
                    mailbox.put_front(found)
            raise
        finally:
            self._tasks.discard(task)
        if message is not None:
            if self._abandoned:
                mailbox.put_front(message)
                return None
            self._taken.append((mailbox, message))
        return message

    def confirm(self) -> None:
        """The answer reached the client: what was taken is delivered."""
        self._confirmed = True
        self._taken.clear()

    def abandon(self) -> None:
        """The client is gone: stop waiting and give back what was taken but not delivered."""
        if self._confirmed or self._abandoned:
            return
        self._abandoned = True
        for task in self._tasks:
            task.cancel()
        for mailbox, message in reversed(self._taken):
            mailbox.put_front(message)
        self._taken.clear()
