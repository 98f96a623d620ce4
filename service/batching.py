"""Dynamic batching: one ``Batcher`` per model version merges queued sequences into padded ONNX Runtime calls.

Policy. A batch starts as soon as a run slot is free and something is queued; while every slot is busy, new
sequences accumulate and the next batch takes them all (up to ``max_batch_size``). So one lone request never
waits for company, and a loaded server runs full batches. ``max_queue_delay_s`` > 0 adds a wait for the batch
to fill, counted from the oldest queued sequence. With ``length_buckets``, sequences are grouped by length and
a batch is drawn from the bucket of the oldest sequence, so short ones do not pay for long ones' padding.

A model whose answers change when it is padded (no mask: ``PadRule.paddable`` False) never sees padding: its
batch is run as one call per distinct length. A graph of fixed length (``PadRule.width``) is always padded to it.

Which queued sequences form a batch — bounded by sequences, padded tokens and (with maps) attention cells, of one
kind, ordinary before bulk — is ``service.forming``'s. A batch may run on the event loop's own thread only when it
is alone and cheap: no maps, and its tokens × the compute per token measured at warm-up within ``inline_max_s``.

Within a batch, ``split_min`` > 0 sorts the sequences by length and runs them as ``len // split_min`` ONNX Runtime
calls of neighbouring lengths: each call is padded only to its own longest sequence. On a CPU this cut the
model's time per sequence by 15-30% for batches of 12-32 mixed-length texts (bench/README.md); a GPU prefers one
large call, so the repository turns it off there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.errors import DeadlineExceeded, InferenceFailed, Overloaded, Unavailable
from service.forming import Item, Limits, Queues, Row

log = logging.getLogger(__name__)

# (ids, mask, the outputs wanted, segment ids or None) → outputs by name, each [batch, ...]
RunBatch = Callable[[np.ndarray, np.ndarray, Sequence[str], np.ndarray | None], dict[str, np.ndarray]]


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 32
    max_queue_delay_s: float = 0.0
    max_queue_size: int = 1024
    batches_in_flight: int = 1
    length_buckets: tuple[int, ...] = ()
    split_min: int = 0
    inline_lone: bool = False
    max_batch_tokens: int = 0  # 0: sequences alone bound a batch
    max_explain_cells: int = 0
    inline_max_s: float = 0.002

    @property
    def limits(self) -> Limits:
        return Limits(self.max_batch_size, self.max_batch_tokens, self.max_explain_cells)


@dataclass(frozen=True)
class PadRule:
    """How a version's sequences may share a call: the pad id, whether padding is safe, a fixed width if any, and
    whether segment ids go with the ids."""

    pad_id: int = 0
    paddable: bool = True
    width: int | None = None
    segments: bool = False  # the model takes segment ids


@dataclass(frozen=True)
class BatchStats:
    """What one runtime call did, for metrics."""

    size: int
    padded_length: int
    queue_s: tuple[float, ...]
    compute_s: float
    failed: bool


def split_by_length(lengths: Sequence[int], split_min: int) -> list[list[int]]:
    """Indices of a batch in runs of neighbouring lengths: sorted, then cut into ``len // split_min`` parts."""
    parts = len(lengths) // split_min if split_min > 0 else 1
    if parts <= 1:
        return [list(range(len(lengths)))]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[p * len(order) // parts : (p + 1) * len(order) // parts] for p in range(parts)]


def group_by_length(lengths: Sequence[int]) -> list[list[int]]:
    """Indices of a batch grouped by exact length (in order of first appearance): calls that need no padding."""
    groups: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        groups.setdefault(length, []).append(index)
    return list(groups.values())


def pad(rows: Sequence[np.ndarray], pad_id: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad 1-D id arrays to the longest (or to ``width``); the mask is 1 on real tokens and 0 on padding."""
    width = width or max(len(row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=rows[0].dtype)
    mask = np.zeros((len(rows), width), dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def pad_segments(rows: Sequence[np.ndarray | None], width: int, dtype: np.dtype) -> np.ndarray:
    """Segment (token type) ids padded with 0 like the mask; a row without its own is all 0 (one text)."""
    segments = np.zeros((len(rows), width), dtype=dtype)
    for i, row in enumerate(rows):
        if row is not None:
            segments[i, : len(row)] = row
    return segments


class Batcher:
    """Bounded queue → padded batches → ``run`` off the event loop → each future gets its own row."""

    def __init__(
        self,
        run: RunBatch,
        policy: BatchPolicy,
        padding: PadRule,
        outputs: Sequence[str],
        explain_outputs: Sequence[str] = (),
        observe: Callable[[BatchStats], None] | None = None,
        per_token_s: float = 0.0,
    ) -> None:
        """``per_token_s``: the model's compute per token, to tell a cheap batch (run inline) from a long one."""
        self._run, self.policy, self.padding = run, policy, padding
        self._outputs, self._explain_outputs = tuple(outputs), tuple(explain_outputs)
        self._observe = observe or (lambda stats: None)
        self._per_token_s = per_token_s
        self._queues = Queues(policy.length_buckets)
        self._closed = False
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(policy.batches_in_flight)
        self._executor = ThreadPoolExecutor(policy.batches_in_flight, thread_name_prefix="inference")
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    @property
    def depth(self) -> int:
        """Sequences queued and not yet taken into a batch."""
        return self._queues.depth

    @property
    def _depth(self) -> int:
        return self._queues.depth

    def check_room(self, count: int) -> None:
        """Raise at once (Unavailable, Overloaded) if ``count`` more sequences could not be queued now."""
        if self._closed:
            raise Unavailable("this model version is unloading; retry to reach its successor")
        if self._depth + count > self.policy.max_queue_size:
            raise Overloaded(f"the queue is full ({self.policy.max_queue_size} sequences); retry shortly")

    def submit(
        self,
        rows: Sequence[np.ndarray],
        explain: bool,
        deadline: float,
        alone: bool = False,
        segments: Sequence[np.ndarray | None] | None = None,
        bulk: bool = False,
    ) -> list[asyncio.Future[Row]]:
        """Queue every row or none of them; each future resolves to that row's outputs (still padded).

        ``alone``: the caller knows of no other request in progress, so the rows may run on the loop's thread
        (with ``inline_lone``) if nothing else is queued or running when their batch starts. ``segments``: each
        row's segment ids, for a model that takes them (None: all 0). ``bulk``: rows that must not hold ordinary
        requests back (an occlusion's variants): they fill the room ordinary rows leave.
        """
        self.check_room(len(rows))
        loop = asyncio.get_running_loop()
        futures = []
        for index, ids in enumerate(rows):
            item = Item(ids, segments[index] if segments else None, explain, loop.create_future(), alone, bulk)
            item.timer = loop.call_at(loop.time() + max(deadline - time.monotonic(), 0.0), self._expire, item)
            self._queues.push(item)
            futures.append(item.future)
        self._arrived.set()
        return futures

    async def close(self) -> None:
        """Refuse new work, finish what is queued and running, then release the threads."""
        self._closed = True
        self._arrived.set()
        await self._loop_task
        if self._running:
            await asyncio.gather(*self._running)
        self._executor.shutdown(wait=True)

    @staticmethod
    def _expire(item: Item) -> None:
        # Still queued at its deadline: answer now; the batch builder skips finished futures.
        if not item.future.done():
            item.future.set_exception(DeadlineExceeded("the request's deadline passed before it could run"))

    async def _loop(self) -> None:
        while True:
            if self._depth == 0:
                if self._closed:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._slots.acquire()
            await self._fill_window()
            batch = self._queues.take(self.policy.limits)
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._execute(batch, self._inline(batch)))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _fill_window(self) -> None:
        """With a queue delay set, wait until the batch is full or the oldest item has waited that long."""
        delay = self.policy.max_queue_delay_s
        while delay > 0 and not self._closed and self._depth < self.policy.max_batch_size:
            oldest = self._queues.oldest()
            remaining = (oldest or 0.0) + delay - time.monotonic()
            if oldest is None or remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _inline(self, batch: list[Item]) -> bool:
        """Run on the loop's thread: a lone batch (nothing else queued or running, no other request in progress)
        without maps whose compute, by the measured cost per token, stays under ``inline_max_s``."""
        if not self.policy.inline_lone or self._running or self._depth or not all(i.alone for i in batch):
            return False
        tokens = len(batch) * max(len(item.ids) for item in batch)
        return not any(item.explain for item in batch) and tokens * self._per_token_s <= self.policy.inline_max_s

    async def _execute(self, batch: list[Item], inline: bool) -> None:
        """Run one batch off the event loop, or, when it is ``inline`` (alone), on the loop's own thread."""
        started = time.monotonic()
        outputs = self._outputs + (self._explain_outputs if any(item.explain for item in batch) else ())
        failed = False
        try:
            if inline:
                answers, width = self._pad_and_run(batch, outputs)
            else:
                loop = asyncio.get_running_loop()
                answers, width = await loop.run_in_executor(self._executor, self._pad_and_run, batch, outputs)
        except Exception:
            failed, width = True, max(len(item.ids) for item in batch)
            log.exception("inference failed for a batch of %d sequences", len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(InferenceFailed("inference failed for the batch holding this request"))
        else:
            for item, answer in zip(batch, answers, strict=True):
                if not item.future.done():
                    item.future.set_result(answer)
        finally:
            self._slots.release()
        self._observe(
            BatchStats(
                len(batch), width, tuple(started - i.enqueued for i in batch), time.monotonic() - started, failed
            )
        )

    def _pad_and_run(self, batch: list[Item], outputs: Sequence[str]) -> tuple[list[Row], int]:
        """Each row's outputs (padded to its call's width), in order, and the widest call's width."""
        answers: list[Row] = [{} for _ in batch]
        width, lengths, rule = 0, [len(item.ids) for item in batch], self.padding
        parts = split_by_length(lengths, self.policy.split_min) if rule.paddable else group_by_length(lengths)
        for part in parts:
            ids, mask = pad([batch[i].ids for i in part], rule.pad_id, rule.width)
            segments = None
            if rule.segments:
                segments = pad_segments([batch[i].segments for i in part], ids.shape[1], ids.dtype)
            result = self._run(ids, mask, outputs, segments)
            width = max(width, ids.shape[1])
            for position, index in enumerate(part):
                answers[index] = {name: array[position] for name, array in result.items()}
        return answers, width
