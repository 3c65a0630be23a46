"""The event bus: sequence numbers, replay after a seq, live delivery, overflow, close, no leak."""

from __future__ import annotations

import asyncio

import pytest

from coral_server.clock import FakeClock
from coral_server.events import Event, EventBus, Subscription


async def collect(subscription: Subscription, timeout: float = 2) -> list[Event]:
    """Every event until the subscription ends (bounded by `timeout`)."""
    async with asyncio.timeout(timeout):
        return [event async for event in subscription]


def test_publish_numbers_events_per_topic() -> None:
    bus = EventBus()
    first = bus.publish("ns/a", "x", {"n": 1})
    second = bus.publish("ns/a", "y", {"n": 2})
    other = bus.publish("ns/b", "x", {})
    assert (first.seq, second.seq, other.seq) == (1, 2, 1)
    assert second.timestamp >= first.timestamp > 0
    assert second.to_json() == {"seq": 2, "type": "y", "timestamp": second.timestamp, "n": 2}
    assert bus.last_seq("ns/a") == 2 and bus.last_seq("ns/none") == 0


async def test_events_are_stamped_by_the_bus_clock() -> None:
    clock = FakeClock(1_000.0)
    bus = EventBus(buffer_size=3, clock=clock)
    assert bus.publish("t", "x", {}).timestamp == 1_000_000
    clock.advance(2.5)
    assert bus.publish("t", "x", {}).timestamp == 1_002_500
    late = bus.subscribe("t", after_seq=0)
    for _ in range(3):
        bus.publish("t", "x", {})  # seq 1 leaves the 3-event buffer
    clock.advance(1)
    marker = await late.next(1)
    assert marker is not None and (marker.type, marker.timestamp) == ("overflow", 1_003_500)


def test_reserved_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="reserved"):
        EventBus().publish("t", "x", {"seq": 5})
    bus = EventBus()
    with pytest.raises(ValueError, match="reserved"):
        bus.publish_each(("a", "b"), "x", {"type": "y"})
    assert bus.topics() == []  # refused before any topic took it


async def test_one_fact_published_to_several_topics_is_numbered_by_each() -> None:
    clock = FakeClock(1_000.0)
    bus = EventBus(clock=clock)
    bus.publish("run", "x", {})
    feed = bus.subscribe("feed")
    bus.publish_each(("run", "feed"), "status", {"n": 1})
    assert bus.last_seq("run") == 2 and bus.last_seq("feed") == 1
    event = await feed.next(1)
    assert event is not None and event.to_json() == {
        "seq": 1,
        "type": "status",
        "timestamp": 1_000_000,
        "n": 1,
    }
    run = bus.subscribe("run", after_seq=0)
    assert [(e.seq, e.type, e.timestamp) for e in (run.poll(), run.poll())] == [
        (1, "x", 1_000_000),
        (2, "status", 1_000_000),
    ]


async def test_subscriber_gets_live_events_in_order() -> None:
    bus = EventBus()
    bus.publish("t", "before", {})
    subscription = bus.subscribe("t")  # None: from now on
    for i in range(5):
        bus.publish("t", "e", {"i": i})
    bus.close_topic("t")
    events = await collect(subscription)
    assert [e.seq for e in events] == [2, 3, 4, 5, 6]
    assert [e.data["i"] for e in events] == [0, 1, 2, 3, 4]


async def test_replay_after_seq_then_live_without_gap_or_duplicate() -> None:
    bus = EventBus()
    for i in range(10):
        bus.publish("t", "e", {"i": i})
    subscription = bus.subscribe("t", after_seq=7)
    assert (await subscription.next(1)) is not None
    bus.publish("t", "e", {"i": 10})
    bus.close_topic("t")
    rest = await collect(subscription)
    assert [e.seq for e in rest] == [9, 10, 11]
    assert subscription.last_seq == 11


async def test_next_times_out_without_losing_anything() -> None:
    bus = EventBus()
    subscription = bus.subscribe("t")
    with pytest.raises(TimeoutError):
        await subscription.next(0.01)
    bus.publish("t", "e", {})
    event = await subscription.next(1)
    assert event is not None and event.seq == 1
    subscription.close()


async def test_gap_free_under_concurrent_publishers() -> None:
    bus = EventBus()
    early = bus.subscribe("t", after_seq=0)

    async def publisher(name: str) -> None:
        for i in range(200):
            bus.publish("t", "e", {"by": name, "i": i})
            if i % 7 == 0:
                await asyncio.sleep(0)

    async def late_joiner() -> tuple[int, Subscription]:
        await asyncio.sleep(0)
        start = bus.last_seq("t")
        return start, bus.subscribe("t", after_seq=start)

    joiner = asyncio.create_task(late_joiner())
    await asyncio.gather(*(publisher(n) for n in "abcd"))
    start, late = await joiner
    bus.close_topic("t")
    everything = await collect(early)
    assert [e.seq for e in everything] == list(range(1, 801))
    for name in "abcd":  # each publisher's own order is kept
        assert [e.data["i"] for e in everything if e.data["by"] == name] == list(range(200))
    assert 0 < start < 800  # it really joined mid-stream
    assert [e.seq for e in await collect(late)] == list(range(start + 1, 801))


async def test_slow_subscriber_is_dropped_with_an_overflow_marker() -> None:
    bus = EventBus(buffer_size=100, max_lag=5)
    slow = bus.subscribe("t")
    fast = bus.subscribe("t")
    bus.publish("t", "e", {})
    bus.publish("t", "e", {})
    assert (await slow.next(1)).seq == 1  # type: ignore[union-attr]
    got = [await fast.next(1), await fast.next(1)]
    assert [e.seq for e in got if e] == [1, 2]
    for _ in range(6):  # slow now has 7 unread events, more than max_lag
        bus.publish("t", "e", {})
    marker = await slow.next(1)
    assert marker is not None and marker.type == "overflow" and marker.seq == 1
    assert await slow.next(1) is None and slow.ended
    # It may resume from its last seq while that is still buffered.
    assert bus.can_resume("t", marker.seq)
    resumed = bus.subscribe("t", after_seq=marker.seq)
    assert (await resumed.next(1)).seq == 2  # type: ignore[union-attr]
    resumed.close()
    fast.close()


async def test_resume_older_than_the_buffer_overflows_at_once() -> None:
    bus = EventBus(buffer_size=3)
    for _ in range(10):
        bus.publish("t", "e", {})
    assert not bus.can_resume("t", 5)
    assert bus.can_resume("t", 7) and bus.can_resume("t", 10)
    assert not bus.can_resume("t", 11)  # never issued
    subscription = bus.subscribe("t", after_seq=5)
    marker = await subscription.next(1)
    assert marker is not None and marker.type == "overflow" and marker.seq == 5
    assert await subscription.next(1) is None


async def test_close_ends_subscribers_after_the_final_event() -> None:
    bus = EventBus()
    subscription = bus.subscribe("t")
    waiting = asyncio.create_task(collect(subscription))
    await asyncio.sleep(0)  # one loop step (not a wait for time): the reader starts and blocks
    bus.publish("t", "session_closed", {"reason": "done"})
    bus.close_topic("t")
    events = await waiting
    assert [e.type for e in events] == ["session_closed"]
    assert subscription.ended


async def test_closed_topic_is_forgotten_when_its_subscribers_leave() -> None:
    bus = EventBus()
    bus.publish("gone", "e", {})
    bus.close_topic("gone")
    assert not bus.has_topic("gone")  # nobody was listening

    bus.publish("t", "e", {})
    a = bus.subscribe("t", after_seq=0)
    b = bus.subscribe("t", after_seq=0)
    bus.close_topic("t")
    assert bus.has_topic("t")  # still draining
    assert [e.seq for e in await collect(a)] == [1]
    assert bus.has_topic("t")
    b.close()  # leaving without reading also counts
    assert not bus.has_topic("t")
    assert bus.topics() == []


async def test_close_all_ends_every_stream() -> None:
    bus = EventBus()
    subscriptions = [bus.subscribe(f"t{i}") for i in range(3)]
    pending = [asyncio.create_task(collect(s)) for s in subscriptions]
    await asyncio.sleep(0)  # one loop step (not a wait for time): the readers start and block
    bus.close_all()
    assert await asyncio.gather(*pending) == [[], [], []]
    assert bus.topics() == []


async def test_subscription_as_context_manager_leaves_the_topic() -> None:
    bus = EventBus()
    async with bus.subscribe("t") as subscription:
        bus.publish("t", "e", {})
        assert (await subscription.next(1)) is not None
    assert subscription.ended
    bus.close_topic("t")
    assert not bus.has_topic("t")


async def test_a_bounded_topic_keeps_fewer_events_and_drops_laggards_with_overflow() -> None:
    bus = EventBus(buffer_size=100)
    bus.bound("busy", 3)
    laggard = bus.subscribe("busy")
    for i in range(5):
        bus.publish("busy", "tick", {"i": i})
    assert (bus.first_seq("busy"), bus.last_seq("busy")) == (3, 5)
    marker = await laggard.next(1)
    assert marker is not None and marker.type == "overflow" and marker.seq == 0
    assert bus.can_resume("busy", 2) and not bus.can_resume("busy", 1)
    assert bus.first_seq("other") == 1  # other topics keep the default
