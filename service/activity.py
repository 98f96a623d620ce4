"""Which server processes are running a batch right now, so that a lone batch may use every core.

One worker per core with one ONNX Runtime thread each is right under load, but leaves the other cores idle for a
lone request. Before each ONNX Runtime call a worker asks the board whether any batch runs anywhere; if none does,
the call may take the wide session (``RuntimeOptions.lone_threads``). The board is a small file shared by the
workers of one supervisor (a slot of 8 bytes per worker, the count of batches it runs), mapped into each process:
reading it costs a sum over 64 integers, no system call. A stale or racing read only picks the narrow or the wide
session one call too early or too late; answers are the same either way.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from collections.abc import Iterator
from pathlib import Path

SLOTS = 64
BOARD_FILE = "board"
BOARD_ENV = "ATTENTION_SERVE_ACTIVITY_DIR"  # not a setting: where the supervisor's workers meet


class ActivityBoard:
    """Counts of batches running, per process. Without a folder (one process) only this process counts."""

    def __init__(self, folder: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._own = 0
        self._slots: memoryview | None = None
        self._slot = 0
        if folder is not None:
            self._slots, self._slot = _attach(folder)

    def _busy(self) -> bool:
        if self._slots is None:
            return self._own > 0
        return any(self._slots)

    @contextlib.contextmanager
    def running(self) -> Iterator[bool]:
        """Count one batch as running for its duration; yields whether it started alone (nothing else running)."""
        with self._lock:
            alone = not self._busy()
            self._own += 1
            self._publish()
        try:
            yield alone
        finally:
            with self._lock:
                self._own -= 1
                self._publish()

    def _publish(self) -> None:
        if self._slots is not None:
            self._slots[self._slot] = self._own


def _attach(folder: Path) -> tuple[memoryview, int]:
    """Map the shared board (creating it if this is the first worker) and claim a free slot of it."""
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder / BOARD_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(descriptor).st_size < SLOTS * 8:
            os.ftruncate(descriptor, SLOTS * 8)
        mapped = mmap.mmap(descriptor, SLOTS * 8)
    finally:
        os.close(descriptor)
    for slot in range(SLOTS):
        try:
            os.close(os.open(folder / f"slot-{slot}", os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            continue
        return memoryview(mapped).cast("q"), slot
    raise RuntimeError(f"more than {SLOTS} workers share one activity board")


def board_from_environment() -> ActivityBoard:
    """The supervisor's board when this process is one of several workers, else a board of this process alone."""
    folder = os.environ.get(BOARD_ENV)
    return ActivityBoard(Path(folder) if folder else None)
