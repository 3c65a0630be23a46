"""RequestWaits: cancelled or undelivered waits give their messages back."""

from __future__ import annotations

import asyncio

from coral_server.mcp.request_waits import RequestWaits
from coral_server.sessions.mailbox import Mailbox
from coral_server.sessions.model import Message
from tests.conftest import loop_steps, wait_until


def msg(i: int) -> Message:
    return Message(id=str(i), thread_id="t", sender="a", text=f"m{i}", mentions=(), timestamp=i)


async def test_confirmed_delivery_keeps_message_taken() -> None:
    box, waits = Mailbox(), RequestWaits()
    box.put(msg(1))
    got = await waits.wait(box, box.take(lambda m: True, 1))
    assert got is not None and got.id == "1"
    waits.confirm()
    waits.abandon()
    assert len(box) == 0


async def test_abandon_after_take_puts_message_back_first() -> None:
    box, waits = Mailbox(), RequestWaits()
    box.put(msg(1))
    box.put(msg(2))
    assert (await waits.wait(box, box.take(lambda m: True, 1))) is not None
    waits.abandon()
    assert [m.id for m in [box.take_now(lambda m: True), box.take_now(lambda m: True)] if m] == ["1", "2"]


async def test_abandon_cancels_a_pending_wait() -> None:
    box, waits = Mailbox(), RequestWaits()
    waiter = asyncio.create_task(waits.wait(box, box.take(lambda m: True, 30)))
    await wait_until(lambda: box.waiting == 1)
    waits.abandon()
    assert await asyncio.wait_for(waiter, 1) is None
    assert box.waiting == 0
    box.put(msg(3))
    assert len(box) == 1


async def test_cancelling_the_handler_stops_the_take() -> None:
    box, waits = Mailbox(), RequestWaits()
    handler = asyncio.create_task(waits.wait(box, box.take(lambda m: True, 30)))
    await wait_until(lambda: box.waiting == 1)
    handler.cancel()
    await asyncio.gather(handler, return_exceptions=True)
    await wait_until(lambda: box.waiting == 0)  # the take's task ends with its handler
    box.put(msg(4))
    await loop_steps()
    assert len(box) == 1 and box.waiting == 0


async def test_handler_cancelled_after_its_take_finished_gives_the_message_back() -> None:
    box, waits = Mailbox(), RequestWaits()
    handler = asyncio.create_task(waits.wait(box, box.take(lambda m: True, 30)))
    await wait_until(lambda: box.waiting == 1)
    box.put(msg(5))
    await asyncio.sleep(0)  # the take finished with the message; the handler has not resumed yet
    handler.cancel()
    await asyncio.gather(handler, return_exceptions=True)
    assert handler.cancelled()
    assert [m.id for m in [box.take_now(lambda m: True)] if m] == ["5"]
    assert box.waiting == 0


async def test_abandon_while_the_handler_is_cancelled_still_raises() -> None:
    # The handler's own cancellation wins over an abandon: it must not turn into a normal return.
    box, waits = Mailbox(), RequestWaits()
    handler = asyncio.create_task(waits.wait(box, box.take(lambda m: True, 30)))
    await wait_until(lambda: box.waiting == 1)
    waits.abandon()
    handler.cancel()
    await asyncio.gather(handler, return_exceptions=True)
    assert handler.cancelled()
    assert box.waiting == 0
