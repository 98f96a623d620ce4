"""Which queued sequences form the next batch: the queues of one batcher and the rules for taking from them.

Queues: one per length bucket (``length_buckets``), each twice over — ordinary sequences and bulk ones (an occlusion's
variants, which may be hundreds of one request's). A batch starts from the oldest ordinary sequence (the oldest bulk
one only when no ordinary one waits), so bulk work never holds ordinary requests back: it fills what room is left.

A batch holds one kind: answers only (the lean graph) or with maps (the explaining graph), so a request for answers
is never run through the slower graph because an explanation happened to share its batch. It is bounded three ways:
``max_batch_size`` sequences; ``max_batch_tokens`` padded tokens (sequences × the longest), so 512-token batches stay
small while short texts still batch wide; and, for a batch with maps, ``max_explain_cells`` (sequences × longest²: the
maps' size per layer and head).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

Row = dict[str, np.ndarray]


@dataclass(frozen=True)
class Limits:
    """A batch's bounds (0: unbounded)."""

    max_batch_size: int
    max_batch_tokens: int = 0
    max_explain_cells: int = 0

    def fits(self, count: int, width: int, explain: bool) -> bool:
        if count > self.max_batch_size or (self.max_batch_tokens and count * width > self.max_batch_tokens):
            return False
        return not (explain and self.max_explain_cells and count * width * width > self.max_explain_cells)


@dataclass(eq=False)
class Item:
    """One queued sequence and the future its request awaits."""

    ids: np.ndarray
    segments: np.ndarray | None
    explain: bool
    future: asyncio.Future[Row]
    alone: bool
    bulk: bool = False
    enqueued: float = field(default_factory=time.monotonic)
    timer: asyncio.TimerHandle | None = None


class Queues:
    """Queued sequences by bucket and by ordinary / bulk; ``take`` forms the next batch."""

    def __init__(self, buckets: tuple[int, ...]) -> None:
        self._buckets = buckets
        self._ordinary: list[deque[Item]] = [deque() for _ in range(len(buckets) + 1)]
        self._bulk: list[deque[Item]] = [deque() for _ in range(len(buckets) + 1)]
        self.depth = 0

    def push(self, item: Item) -> None:
        bucket = bisect.bisect_left(self._buckets, len(item.ids))
        (self._bulk if item.bulk else self._ordinary)[bucket].append(item)
        self.depth += 1

    def oldest(self) -> float | None:
        """When the oldest queued sequence arrived (None: nothing queued)."""
        fronts = [q[0].enqueued for q in (*self._ordinary, *self._bulk) if q]
        return min(fronts, default=None)

    def take(self, limits: Limits) -> list[Item]:
        """The next batch: from the bucket of the oldest ordinary sequence (else bulk), of its kind, ordinary
        sequences first, then bulk ones while room is left; finished futures are dropped on the way."""
        self._drop_finished()
        bucket = self._first_bucket(self._ordinary) if any(self._ordinary) else self._first_bucket(self._bulk)
        if bucket is None:
            return []
        explain = (self._ordinary[bucket] or self._bulk[bucket])[0].explain
        batch: list[Item] = []
        for queue in (self._ordinary[bucket], self._bulk[bucket]):
            if not self._fill(queue, batch, explain, limits):
                break
        for item in batch:
            if item.timer is not None:
                item.timer.cancel()
        return batch

    def _fill(self, queue: deque[Item], batch: list[Item], explain: bool, limits: Limits) -> bool:
        """Move the items of ``queue`` of this kind into ``batch`` while they fit, keeping the rest in order;
        False once the batch is full."""
        kept: list[Item] = []
        width = max((len(item.ids) for item in batch), default=0)
        while queue:
            item = queue.popleft()
            if item.future.done():
                self.depth -= 1
                continue
            grown = max(width, len(item.ids))
            if item.explain != explain:
                kept.append(item)
            elif batch and not limits.fits(len(batch) + 1, grown, explain):
                queue.appendleft(item)
                queue.extendleft(reversed(kept))
                return False
            else:
                batch.append(item)
                self.depth -= 1
                width = grown
        queue.extend(kept)
        return True

    @staticmethod
    def _first_bucket(queues: list[deque[Item]]) -> int | None:
        live = [(q[0].enqueued, index) for index, q in enumerate(queues) if q]
        return min(live)[1] if live else None

    def _drop_finished(self) -> None:
        for queue in (*self._ordinary, *self._bulk):
            while queue and queue[0].future.done():
                queue.popleft()
                self.depth -= 1
