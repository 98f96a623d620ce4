"""The gRPC server's own loop and the crossing onto the app's loop: results, errors, cancellation and context
reach the other side; a call on the app's own loop does not cross at all."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator

import pytest

from service.errors import InvalidInput
from service.protocols.grpc_loop import AppLoop, LoopThread

pytestmark = pytest.mark.anyio
tag: contextvars.ContextVar[str] = contextvars.ContextVar("tag", default="-")


@pytest.fixture
async def other() -> AsyncIterator[LoopThread]:
    """A loop in a thread of its own, as the gRPC server runs on."""
    thread = LoopThread("test-grpc")
    thread.start()
    yield thread
    await thread.stop()


async def where() -> tuple[threading.Thread, asyncio.AbstractEventLoop, str]:
    return threading.current_thread(), asyncio.get_running_loop(), tag.get()


async def test_a_call_from_another_loop_runs_on_the_app_loop_with_the_callers_context(other: LoopThread) -> None:
    app = AppLoop(asyncio.get_running_loop())

    async def from_grpc() -> tuple[threading.Thread, asyncio.AbstractEventLoop, str]:
        tag.set("request-7")
        return await app.run(where())

    thread, loop, seen = await other.run(from_grpc())
    assert (thread, loop, seen) == (threading.current_thread(), asyncio.get_running_loop(), "request-7")


async def test_a_call_on_the_app_loop_itself_runs_in_place() -> None:
    app = AppLoop(asyncio.get_running_loop())
    task = asyncio.current_task()

    async def same_task() -> asyncio.Task[object] | None:
        return asyncio.current_task()

    assert await app.run(same_task()) is task


async def test_errors_cross_back_as_they_were_raised(other: LoopThread) -> None:
    app = AppLoop(asyncio.get_running_loop())

    async def refused() -> None:
        raise InvalidInput("inputs: no")

    with pytest.raises(InvalidInput, match="inputs: no"):
        await other.run(app.run(refused()))


async def test_cancelling_the_caller_cancels_the_work_on_the_app_loop(other: LoopThread) -> None:
    app = AppLoop(asyncio.get_running_loop())
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def waits_forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def caller() -> None:
        await app.run(waits_forever())

    call = other.submit(caller())
    await started.wait()
    call.cancel()  # as gRPC cancels an RPC whose client went away
    await asyncio.wait_for(cancelled.wait(), 30)  # bounded: a crossing that loses the cancel fails, not hangs
    assert call.cancelled()


async def test_many_calls_in_flight_each_get_their_own_answer(other: LoopThread) -> None:
    app = AppLoop(asyncio.get_running_loop())

    async def double(value: int) -> int:
        await asyncio.sleep(0)
        return 2 * value

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(app.run(double(i)) for i in range(64))))

    assert await other.run(burst()) == [2 * i for i in range(64)]


async def test_stop_ends_the_thread() -> None:
    thread = LoopThread("test-grpc-stop")
    thread.start()
    ran_on, _, _ = await thread.run(where())
    assert ran_on is not threading.current_thread()
    await thread.stop()
    assert not ran_on.is_alive()
    assert thread.loop.is_closed()
