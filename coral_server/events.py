"""The event bus: per-topic sequence numbers, a bounded replay buffer, live and resumable subscriptions.

One bus serves every live view (WebSocket, SSE, and whatever comes next). A topic is a string (a
session's is ``"{namespace}/{session_id}"``); each published event gets the topic's next sequence
number, so a client that remembers the last seq it saw can resume without gap or duplicate for as
long as the event is still in the topic's ring buffer. Pure asyncio: nothing here knows of HTTP.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

from coral_server.clock import Clock, SystemClock

DEFAULT_BUFFER_SIZE = 10_000
# The server-wide feed: lifecycle events of every namespace (namespace_created/closed), session
# (session_created/running/closing/closed, runtime_started/stopped, each with namespace and
# session_id) and run. It never closes. A session's own topic is "namespace/id", so no session
# topic can be this one or the next.
SERVER_TOPIC = "server"
# Every agent's output lines (agent_log, with namespace, session_id, name and the line): what the
# logs stream replays and follows.
LOGS_TOPIC = "logs"
RESERVED_KEYS = frozenset({"seq", "type", "timestamp"})


def _check(data: dict[str, Any]) -> None:
    if not RESERVED_KEYS.isdisjoint(data):
        reserved = sorted(RESERVED_KEYS.intersection(data))
        raise ValueError(f"event data must not use the reserved keys {reserved}")


@dataclass(slots=True)
class Event:
    """One published fact: `seq` is 1, 2, ... per topic; `timestamp` is Unix milliseconds."""

    seq: int
    type: str
    timestamp: int
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "timestamp": self.timestamp, **self.data}


class _Topic:
    __slots__ = ("buffer", "closed", "last_seq", "name", "subscribers")

    def __init__(self, name: str, buffer_size: int) -> None:
        self.name = name
        self.buffer: deque[Event] = deque(maxlen=buffer_size)
        self.last_seq = 0
        self.closed = False
        self.subscribers: set[Subscription] = set()

    @property
    def first_seq(self) -> int:
        """The oldest seq still buffered (last_seq + 1 when the buffer is empty)."""
        return self.buffer[0].seq if self.buffer else self.last_seq + 1


class Subscription:
    """An async iterator over a topic's events: the buffered ones after `after_seq`, then live ones.

    It reads straight from the topic's ring buffer through a cursor, so replay and live delivery are
    one path (no gap, no duplicate) and a subscriber costs nothing per event. A subscriber that falls
    more than `max_lag` events behind is dropped: it gets a final `overflow` event (whose seq is the
    last one it received, the point to resume from) and ends. It ends after the last event of a
    closed topic. Always `close()` it (or use `async with`), so closed topics can be forgotten.
    """

    __slots__ = ("_bus", "_closed", "_next", "_overflowed", "_topic", "_wake")

    def __init__(self, bus: EventBus, topic: _Topic, after_seq: int) -> None:
        self._bus = bus
        self._topic = topic
        self._next = after_seq + 1
        self._wake = asyncio.Event()
        self._overflowed = False
        self._closed = False

    @property
    def last_seq(self) -> int:
        """The seq of the last event this subscription returned (or the one it started after)."""
        return self._next - 1

    @property
    def ended(self) -> bool:
        return self._closed

    @property
    def topic_closed(self) -> bool:
        """Whether the topic has closed: what is left to read is all there will be."""
        return self._topic.closed

    def _notify(self, seq: int) -> None:
        if seq - self._next + 1 > self._bus.max_lag:
            self._overflowed = True
            self._topic.subscribers.discard(self)
        self._wake.set()

    def poll(self) -> Event | None:
        """The next event if one is ready, without waiting; None when there is none yet."""
        topic = self._topic
        if self._overflowed or self._next < topic.first_seq:
            marker = Event(self.last_seq, "overflow", self._bus.clock.now_ms(), {})
            self.close()
            return marker
        if self._next <= topic.last_seq:
            event = topic.buffer[self._next - topic.first_seq]
            self._next += 1
            return event
        if topic.closed:
            self.close()
        return None

    async def next(self, timeout: float | None = None) -> Event | None:
        """The next event, or None once the subscription has ended.

        Raises TimeoutError when nothing arrives within `timeout` seconds; nothing is lost by that
        (the cursor has not moved), so call again. The timeout bounds the caller's wait (a
        keep-alive), so it is real time, measured by the event loop, not the bus's clock.
        """
        while not self._closed:
            event = self.poll()
            if event is not None or self._closed:
                return event
            self._wake.clear()
            if timeout is None:
                await self._wake.wait()
            else:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
        return None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        event = await self.next()
        if event is None:
            raise StopAsyncIteration
        return event

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Leave the topic (idempotent); a closed topic with no subscribers left is forgotten."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._topic.subscribers.discard(self)
        self._bus._forget_if_done(self._topic)


class EventBus:
    """Topics of sequenced events with bounded replay; subscribers are woken, never awaited."""

    def __init__(
        self,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        max_lag: int | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self.clock: Clock = clock if clock is not None else SystemClock()  # stamps every event
        self.buffer_size = buffer_size
        # Lagging further than the buffer would mean a gap, so the buffer bounds the lag.
        self.max_lag = min(max_lag, buffer_size) if max_lag is not None else buffer_size
        self._topics: dict[str, _Topic] = {}

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic(name, self.buffer_size)
        return topic

    def publish(self, topic: str, type: str, data: dict[str, Any]) -> Event:
        """Append an event to `topic` (created on first use) and wake its subscribers."""
        _check(data)
        return self._append(topic, type, self.clock.now_ms(), data)

    def publish_each(self, topics: tuple[str, ...], type: str, data: dict[str, Any]) -> None:
        """`publish` the same fact to each of `topics` (one timestamp; each topic numbers it)."""
        _check(data)
        now = self.clock.now_ms()
        for topic in topics:
            self._append(topic, type, now, data)

    def _append(self, topic: str, type: str, timestamp: int, data: dict[str, Any]) -> Event:
        t = self._topic(topic)
        if t.closed:
            raise ValueError(f"topic {topic!r} is closed")
        t.last_seq += 1
        event = Event(t.last_seq, type, timestamp, data)
        t.buffer.append(event)
        if t.subscribers:  # a notified subscriber may leave: iterate over a copy
            for subscriber in list(t.subscribers):
                subscriber._notify(event.seq)
        return event

    def bound(self, topic: str, buffer_size: int) -> None:
        """Keep fewer of `topic`'s events than the bus's default (a busy topic, such as the logs)."""
        t = self._topic(topic)
        t.buffer = deque(t.buffer, maxlen=max(1, min(buffer_size, self.buffer_size)))

    def subscribe(self, topic: str, after_seq: int | None = None) -> Subscription:
        """Events of `topic` with seq > `after_seq` (None: only those published from now on).

        If `after_seq` is older than the buffer, the first thing the subscription yields is an
        `overflow` event (check `can_resume` first to avoid that).
        """
        t = self._topic(topic)
        subscription = Subscription(self, t, t.last_seq if after_seq is None else max(after_seq, 0))
        t.subscribers.add(subscription)
        return subscription

    def has_topic(self, topic: str) -> bool:
        return topic in self._topics

    def first_seq(self, topic: str) -> int:
        """The seq of the topic's oldest buffered event (last_seq + 1 when none is buffered)."""
        t = self._topics.get(topic)
        return t.first_seq if t else 1

    def last_seq(self, topic: str) -> int:
        """The seq of the topic's latest event (0 when it has none)."""
        t = self._topics.get(topic)
        return t.last_seq if t else 0

    def can_resume(self, topic: str, after_seq: int) -> bool:
        """Whether every event after `after_seq` is still buffered (and `after_seq` was ever issued)."""
        t = self._topics.get(topic)
        if t is None:
            return False
        return t.first_seq - 1 <= after_seq <= t.last_seq

    def close_topic(self, topic: str) -> None:
        """Let subscribers drain what was published, then end; forget the topic once they have left."""
        t = self._topics.get(topic)
        if t is None or t.closed:
            return
        t.closed = True
        for subscriber in list(t.subscribers):
            subscriber._wake.set()
        self._forget_if_done(t)

    def close_all(self) -> None:
        """Close every topic (server shutdown): every live stream ends after its last event."""
        for name in list(self._topics):
            self.close_topic(name)

    def topics(self) -> list[str]:
        return list(self._topics)

    def _forget_if_done(self, topic: _Topic) -> None:
        if topic.closed and not topic.subscribers and self._topics.get(topic.name) is topic:
            del self._topics[topic.name]
