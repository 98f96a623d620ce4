"""Process lifecycle: readiness false the moment a stop signal arrives; workers that stop with their supervisor."""

from __future__ import annotations

import ctypes
import os
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


PR_SET_PDEATHSIG = 1


def stop_with_parent(parent: int) -> bool:
    """Ask Linux to send this process SIGTERM when its parent (the workers' supervisor) dies.

    A supervisor killed outright (SIGKILL, the OOM killer) cannot stop its workers; without this they would live
    on as orphans holding the port. Returns whether the request took; False off Linux. If the parent is already
    gone, the SIGTERM is sent now, so the worker drains and exits like its siblings.
    """
    # The process's own symbols include libc's; find_library("c") would run ldconfig at every worker start.
    prctl = getattr(ctypes.CDLL(None), "prctl", None)
    if prctl is None or prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
    return True
