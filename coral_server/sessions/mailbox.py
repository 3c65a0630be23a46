"""Per-agent mailboxes: every message an agent should see is queued until a wait returns it."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from coral_server.sessions.model import Message

MessageFilter = Callable[[Message], bool]

# Loop steps from `put` waking a blocked `take` to the request handler awaiting that take running
# again: the take's task finishes in the first, the handler resumes in the second (see
# `coral_server.mcp.request_waits.RequestWaits.wait`). A test holds the code to this number.
WAKE_STEPS = 2


class Mailbox:
    """An ordered queue of undelivered messages with filtered, blocking takes.

    A message stays queued until a wait whose filter accepts it takes it, so nothing sent while the
    agent was busy (or waiting with another filter) is lost; order is kept per filter.
    """

    __slots__ = ("_changed", "_queue", "closed", "waiting")

    def __init__(self) -> None:
        self._queue: deque[Message] = deque()
        self._changed = asyncio.Event()
        self.waiting = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, message: Message) -> None:
        self._queue.append(message)
        self._changed.set()

    def put_front(self, message: Message) -> None:
        """Return a message that was taken but never reached the agent; it is next in line."""
        self._queue.appendleft(message)
        self._changed.set()

    def close(self) -> None:
        """Wake every waiter; from now on waits return what is queued, or None at once."""
        self.closed = True
        self._changed.set()

    def take_now(self, accept: MessageFilter) -> Message | None:
        """Remove and return the oldest queued message that `accept` accepts, if any."""
        for i, message in enumerate(self._queue):
            if accept(message):
                del self._queue[i]
                return message
        return None

    def discard(self, reject: MessageFilter) -> None:
        """Drop queued messages that `reject` matches (e.g. those of a thread the agent left)."""
        self._queue = deque(m for m in self._queue if not reject(m))

    async def take(self, accept: MessageFilter, timeout: float) -> Message | None:
        """Wait up to `timeout` seconds for a message `accept` accepts; None on timeout."""
        found = self.take_now(accept)
        if found is not None or timeout <= 0 or self.closed:
            return found
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.waiting += 1
        try:
            while True:
                self._changed.clear()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    async with asyncio.timeout(remaining):
                        await self._changed.wait()
                except TimeoutError:
                    return self.take_now(accept)
                found = self.take_now(accept)
                if found is not None or self.closed:
                    return found
        finally:
            self.waiting -= 1
            # Another waiter with a different filter may be blocked on the same event.
            if self._queue:
                self._changed.set()
