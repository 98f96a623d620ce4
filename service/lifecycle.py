"""Process lifecycle: turn readiness false the moment a stop signal arrives, before uvicorn starts draining."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install_stop_hook(on_stop: Callable[[], None]) -> None:
    """Run ``on_stop`` first, then the handler already installed (uvicorn's), on SIGTERM and SIGINT.

    Called from the lifespan, so it works the same in a single process and in each of several workers. Signal
    handlers belong to the main thread; elsewhere (a test client's portal thread) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def handler(number: int, frame: FrameType | None, chained: Callable[..., object] = previous) -> None:
            on_stop()
            chained(number, frame)

        signal.signal(signum, handler)
