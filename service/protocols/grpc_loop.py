"""The gRPC server's own event loop in a thread of its own, and the crossing onto the app's loop.

Why a loop of its own: ``grpc.aio`` takes new RPCs one at a time, each acceptance a few passes of its event loop.
On the loop that also runs HTTP, the batcher and lone batches inline, those passes are long: RPCs reached the
batcher one by one (mean batch 1.1-1.2 under 32 concurrent calls, against 6-14 for REST on the same server) and
each paid a batch-1 model call. On a loop that runs nothing but gRPC the passes are short and the calls overlap
(mean batch ~2, 1.25x the RPCs per second; bench/README.md). This costs two thread crossings per call, so they are
plain callbacks, cheap and woken once per burst (``_Crossing``).

The data plane, the batcher, the admission count and the repository's writes stay on the app's loop; this loop
runs gRPC, decoding and encoding, and reads the repository for health.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's, as uvicorn runs (its ``call_soon_threadsafe`` wakes a loop once for a burst of calls)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it on every platform the image targets
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class AppLoop:
    """Runs coroutines on the app's event loop, from that loop or from another thread's."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """The coroutine's result; cancelling the caller cancels the coroutine on the app's loop too."""
        here = asyncio.get_running_loop()
        if here is self.loop:
            return await coroutine
        crossing = _Crossing(coroutine, here, self.loop)
        self.loop.call_soon_threadsafe(crossing.start)
        try:
            return await crossing.done
        except asyncio.CancelledError:
            self.loop.call_soon_threadsafe(crossing.cancel)
            raise


class _Crossing(Generic[T]):
    """One coroutine run on another loop, its outcome handed back to the caller's loop.

    Plain callbacks both ways (no ``concurrent.futures.Future`` and its locks, as ``run_coroutine_threadsafe``
    takes): a burst of calls wakes each loop once (uvloop coalesces ``call_soon_threadsafe`` wake-ups).
    """

    def __init__(
        self, coroutine: Coroutine[Any, Any, T], caller: asyncio.AbstractEventLoop, target: asyncio.AbstractEventLoop
    ) -> None:
        self.coroutine, self.caller, self.target = coroutine, caller, target
        self.done: asyncio.Future[T] = caller.create_future()
        self.task: asyncio.Task[T] | None = None
        self.cancelled = False

    def start(self) -> None:  # on the target loop
        if self.cancelled:
            self.coroutine.close()
            return
        self.task = self.target.create_task(self.coroutine)
        self.task.add_done_callback(self._finished)

    def cancel(self) -> None:  # on the target loop
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()

    def _finished(self, task: asyncio.Task[T]) -> None:  # on the target loop
        try:
            self.caller.call_soon_threadsafe(self._deliver, task)
        except RuntimeError:  # the caller's loop is closed (gRPC stopped): nobody waits for this answer
            if not task.cancelled():
                task.exception()  # retrieved, so asyncio does not log it as lost

    def _deliver(self, task: asyncio.Task[T]) -> None:  # on the caller's loop
        if self.done.done():
            return
        if task.cancelled():
            self.done.cancel()
        elif (error := task.exception()) is not None:
            self.done.set_exception(error)
        else:
            self.done.set_result(task.result())


class LoopThread:
    """An event loop running in a daemon thread until ``stop``."""

    def __init__(self, name: str) -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """From another loop: run the coroutine on this one and wait for it without blocking the caller's loop."""
        return await asyncio.wrap_future(self.submit(coroutine))

    async def stop(self) -> None:
        """Stop the loop once what it runs has finished, and wait for its thread to end."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            await asyncio.to_thread(self._thread.join)
        self.loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # Tasks left (none, after a drain): cancel them so their coroutines are not destroyed while pending.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
