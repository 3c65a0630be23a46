"""Mailbox: ordered, filtered, blocking takes; nothing lost; close wakes waiters."""

from __future__ import annotations

import asyncio

from coral_server.sessions.mailbox import Mailbox
from coral_server.sessions.model import Message
from tests.conftest import loop_steps, wait_until


def msg(i: int, sender: str = "a", mentions: tuple[str, ...] = ()) -> Message:
    return Message(id=str(i), thread_id="t", sender=sender, text=f"m{i}", mentions=mentions, timestamp=i)


async def test_queued_messages_come_back_in_order() -> None:
    box = Mailbox()
    for i in range(3):
        box.put(msg(i))
    got = [await box.take(lambda m: True, 0.1) for _ in range(3)]
    assert [m.id for m in got if m] == ["0", "1", "2"]
    assert await box.take(lambda m: True, 0.01) is None


async def test_filtered_take_leaves_other_messages_queued() -> None:
    box = Mailbox()
    box.put(msg(1))
    box.put(msg(2, mentions=("me",)))
    box.put(msg(3))
    mention = await box.take(lambda m: "me" in m.mentions, 0.1)
    assert mention is not None and mention.id == "2"
    assert [m.id for m in [box.take_now(lambda m: True), box.take_now(lambda m: True)] if m] == ["1", "3"]


async def test_blocked_take_is_woken_by_a_matching_put_only() -> None:
    box = Mailbox()
    waiter = asyncio.create_task(box.take(lambda m: m.sender == "b", 5))
    await wait_until(lambda: box.waiting == 1)
    box.put(msg(1, sender="a"))
    await loop_steps()
    assert not waiter.done()
    box.put(msg(2, sender="b"))
    got = await asyncio.wait_for(waiter, 1)
    assert got is not None and got.id == "2"
    assert box.waiting == 0 and len(box) == 1


async def test_two_waiters_with_different_filters_both_served() -> None:
    box = Mailbox()
    w1 = asyncio.create_task(box.take(lambda m: m.sender == "x", 5))
    w2 = asyncio.create_task(box.take(lambda m: m.sender == "y", 5))
    await wait_until(lambda: box.waiting == 2)
    box.put(msg(1, sender="y"))
    box.put(msg(2, sender="x"))
    r1, r2 = await asyncio.wait_for(asyncio.gather(w1, w2), 1)
    assert (r1 and r1.id, r2 and r2.id) == ("2", "1")


async def test_timeout_returns_none_and_close_wakes_waiters() -> None:
    box = Mailbox()
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await box.take(lambda m: True, 0.05) is None
    assert loop.time() - start >= 0.04
    waiter = asyncio.create_task(box.take(lambda m: True, 30))
    await wait_until(lambda: box.waiting == 1)
    box.close()
    assert await asyncio.wait_for(waiter, 1) is None


async def test_discard_drops_matching_messages() -> None:
    box = Mailbox()
    box.put(msg(1))
    box.put(Message(id="x", thread_id="other", sender="a", text="", mentions=(), timestamp=0))
    box.discard(lambda m: m.thread_id == "t")
    assert len(box) == 1 and box.take_now(lambda m: True).id == "x"  # type: ignore[union-attr]
