"""The batcher on its own, with a deterministic numpy computation standing in for the model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from service.batching import Batcher, BatchPolicy, BatchStats, PadRule, group_by_length, pad, split_by_length
from service.errors import DeadlineExceeded, InferenceFailed, Overloaded, Unavailable

pytestmark = pytest.mark.anyio


class Recorder:
    """Runs a real computation on the padded batch and remembers each batch; can hold a batch until released."""

    def __init__(self, hold_first: bool = False) -> None:
        self.batches: list[np.ndarray] = []
        self.segments: list[np.ndarray | None] = []
        self.threads: list[int] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.hold_first = hold_first
        self.fail_next = False

    def __call__(
        self, ids: np.ndarray, mask: np.ndarray, outputs: Sequence[str], segments: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        self.batches.append(ids.copy())
        self.segments.append(segments)
        self.threads.append(threading.get_ident())
        self.started.set()
        if self.hold_first and len(self.batches) == 1:
            self.release.wait(timeout=10)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("kernel exploded")
        result = {"total": (ids * mask).sum(axis=1), "length": mask.sum(axis=1)}
        if "square" in outputs:
            result["square"] = ids * ids
        return result


def deadline(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


async def wait_started(recorder: Recorder) -> None:
    await asyncio.to_thread(recorder.started.wait, 10)


def test_pad_right_pads_with_mask() -> None:
    ids, mask = pad([np.array([5, 6, 7]), np.array([9])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [9, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


async def test_items_submitted_together_form_one_batch_and_get_their_own_rows() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, BatchPolicy(max_batch_size=8), PadRule(0), ("total", "length"))
    rows = [np.arange(1, n + 1) for n in (3, 1, 5, 2)]
    results = await asyncio.gather(*batcher.submit(rows, False, deadline()))
    assert [b.shape for b in recorder.batches] == [(4, 5)]
    for row, result in zip(rows, results, strict=True):
        assert result["total"] == row.sum()
        assert result["length"] == len(row)
    await batcher.close()


async def test_requests_arriving_while_busy_are_merged_into_the_next_batch() -> None:
    recorder = Recorder(hold_first=True)
    batcher = Batcher(recorder, BatchPolicy(max_batch_size=8, batches_in_flight=1), PadRule(0), ("total", "length"))
    first = batcher.submit([np.array([1])], False, deadline())
    await wait_started(recorder)
    later = [batcher.submit([np.array([i, i])], False, deadline())[0] for i in range(2, 6)]
    recorder.release.set()
    await asyncio.gather(*first, *later)
    assert [len(b) for b in recorder.batches] == [1, 4]
    assert [f.result()["total"] for f in later] == [4, 6, 8, 10]
    await batcher.close()


async def test_max_batch_size_splits_batches() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, BatchPolicy(max_batch_size=3, batches_in_flight=1), PadRule(0), ("total", "length"))
    await asyncio.gather(*batcher.submit([np.array([i]) for i in range(7)], False, deadline()))
    assert [len(b) for b in recorder.batches] == [3, 3, 1]
    await batcher.close()


async def test_queue_delay_waits_for_the_batch_to_fill() -> None:
    recorder = Recorder()
    policy = BatchPolicy(max_batch_size=2, max_queue_delay_s=30.0, batches_in_flight=1)
    batcher = Batcher(recorder, policy, PadRule(0), ("total", "length"))
    first = batcher.submit([np.array([1])], False, deadline(60))
    for _ in range(5):
        await asyncio.sleep(0)  # let the loop take the first item and start waiting for company
    assert recorder.batches == []
    second = batcher.submit([np.array([2])], False, deadline(60))
    await asyncio.gather(*first, *second)  # the batch is full: it runs without waiting out the delay
    assert [len(b) for b in recorder.batches] == [2]
    await batcher.close()


async def test_length_buckets_keep_short_sequences_apart_from_long_ones() -> None:
    recorder = Recorder()
    policy = BatchPolicy(max_batch_size=8, length_buckets=(16,), batches_in_flight=1)
    batcher = Batcher(recorder, policy, PadRule(0), ("total", "length"))
    rows = [np.ones(3, int), np.ones(100, int), np.ones(4, int), np.ones(90, int)]
    results = await asyncio.gather(*batcher.submit(rows, False, deadline()))
    assert sorted(b.shape for b in recorder.batches) == [(2, 4), (2, 100)]
    assert [r["length"] for r in results] == [3, 100, 4, 90]
    await batcher.close()


async def test_explain_outputs_are_computed_only_when_asked() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, BatchPolicy(), PadRule(0), ("total", "length"), ("square",))
    plain = await batcher.submit([np.array([3])], False, deadline())[0]
    explained = await batcher.submit([np.array([3])], True, deadline())[0]
    assert "square" not in plain
    assert explained["square"].tolist() == [9]
    await batcher.close()


async def test_full_queue_is_refused_at_once_with_retry_after() -> None:
    recorder = Recorder(hold_first=True)
    policy = BatchPolicy(max_batch_size=1, max_queue_size=2, batches_in_flight=1)
    batcher = Batcher(recorder, policy, PadRule(0), ("total", "length"))
    running = batcher.submit([np.array([1])], False, deadline())
    await wait_started(recorder)
    queued = batcher.submit([np.array([2]), np.array([3])], False, deadline())
    with pytest.raises(Overloaded) as refused:
        batcher.submit([np.array([4])], False, deadline())
    assert refused.value.headers["Retry-After"] == "1"
    assert batcher.depth == 2
    recorder.release.set()
    await asyncio.gather(*running, *queued)
    await batcher.close()


async def test_item_past_its_deadline_is_answered_without_running() -> None:
    recorder = Recorder(hold_first=True)
    batcher = Batcher(recorder, BatchPolicy(batches_in_flight=1), PadRule(0), ("total", "length"))
    running = batcher.submit([np.array([1])], False, deadline())
    await wait_started(recorder)
    late = batcher.submit([np.array([2])], False, deadline(0.05))[0]
    with pytest.raises(DeadlineExceeded):
        await late
    recorder.release.set()
    await asyncio.gather(*running)
    await batcher.close()
    assert [b.tolist() for b in recorder.batches] == [[[1]]]


async def test_failed_batch_fails_each_of_its_items_and_the_next_batch_works() -> None:
    recorder = Recorder()
    seen: list[BatchStats] = []
    batcher = Batcher(recorder, BatchPolicy(), PadRule(0), ("total", "length"), observe=seen.append)
    recorder.fail_next = True
    failed = batcher.submit([np.array([1]), np.array([2])], False, deadline())
    for future in failed:
        with pytest.raises(InferenceFailed) as error:
            await future
        assert "exploded" not in error.value.message
    assert (await batcher.submit([np.array([5])], False, deadline())[0])["total"] == 5
    assert [s.failed for s in seen] == [True, False]
    await batcher.close()


async def test_cancelled_items_are_skipped() -> None:
    recorder = Recorder(hold_first=True)
    batcher = Batcher(recorder, BatchPolicy(batches_in_flight=1), PadRule(0), ("total", "length"))
    running = batcher.submit([np.array([1])], False, deadline())
    await wait_started(recorder)
    gone, kept = batcher.submit([np.array([2]), np.array([3])], False, deadline())
    gone.cancel()
    recorder.release.set()
    await asyncio.gather(*running, kept)
    assert [b.tolist() for b in recorder.batches] == [[[1]], [[3]]]
    await batcher.close()


async def test_close_finishes_queued_work_then_refuses_new_items() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, BatchPolicy(max_batch_size=1, batches_in_flight=1), PadRule(0), ("total", "length"))
    queued = batcher.submit([np.array([i]) for i in range(3)], False, deadline())
    await batcher.close()
    assert [f.result()["total"] for f in queued] == [0, 1, 2]
    with pytest.raises(Unavailable):
        batcher.submit([np.array([1])], False, deadline())


def test_split_by_length_groups_neighbouring_lengths() -> None:
    lengths = [5, 1, 9, 3, 7, 2, 8, 4]
    assert split_by_length(lengths, 4) == [[1, 5, 3, 7], [0, 4, 6, 2]]
    assert split_by_length(lengths, 3) == [[1, 5, 3, 7], [0, 4, 6, 2]]  # 8 // 3 = 2 parts
    assert split_by_length(lengths, 0) == [list(range(8))]  # off
    assert split_by_length(lengths, 5) == [list(range(8))]  # too few for two parts of 5
    parts = split_by_length(lengths, 1)
    assert [lengths[p[0]] for p in parts] == sorted(lengths)


async def test_a_split_batch_runs_calls_of_neighbouring_lengths_and_answers_in_order() -> None:
    recorder = Recorder()
    policy = BatchPolicy(max_batch_size=8, batches_in_flight=1, split_min=2)
    batcher = Batcher(recorder, policy, PadRule(0), ("total", "length"))
    rows = [np.arange(1, n + 1) for n in (5, 1, 6, 2)]
    results = await asyncio.gather(*batcher.submit(rows, False, deadline()))
    assert [r["total"] for r in results] == [15, 1, 21, 3]
    assert [r["length"] for r in results] == [5, 1, 6, 2]
    assert [b.shape for b in recorder.batches] == [(2, 2), (2, 6)]  # each call padded to its own longest
    await batcher.close()


def test_group_by_length_keeps_first_appearance_order() -> None:
    assert group_by_length([3, 1, 3, 2, 1]) == [[0, 2], [1, 4], [3]]


async def test_an_unpaddable_model_never_sees_padding() -> None:
    recorder = Recorder()
    policy = BatchPolicy(max_batch_size=8, batches_in_flight=1, split_min=2)
    batcher = Batcher(recorder, policy, PadRule(0, paddable=False), ("total", "length"))
    rows = [np.arange(1, n + 1) for n in (3, 1, 3, 2, 1)]
    results = await asyncio.gather(*batcher.submit(rows, False, deadline()))
    assert [r["total"] for r in results] == [6, 1, 6, 3, 1]
    assert sorted(b.shape for b in recorder.batches) == [(1, 2), (2, 1), (2, 3)]  # one call per length
    assert all(np.all(b != 0) for b in recorder.batches)  # no pad id anywhere
    await batcher.close()


async def test_a_fixed_width_graph_is_always_padded_to_its_width() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, BatchPolicy(batches_in_flight=1), PadRule(7, width=6), ("total", "length"))
    rows = [np.arange(1, n + 1) for n in (3, 1)]
    results = await asyncio.gather(*batcher.submit(rows, False, deadline()))
    assert [r["length"] for r in results] == [3, 1]
    assert [b.tolist() for b in recorder.batches] == [[[1, 2, 3, 7, 7, 7], [1, 7, 7, 7, 7, 7]]]
    await batcher.close()


async def test_a_lone_batch_runs_on_the_loops_thread_and_company_goes_to_the_inference_threads() -> None:
    recorder = Recorder(hold_first=True)
    policy = BatchPolicy(max_batch_size=2, batches_in_flight=2, inline_lone=True)
    batcher = Batcher(recorder, policy, PadRule(0), ("total", "length"))
    loop_thread = threading.get_ident()
    recorder.hold_first = False
    (unsure,) = batcher.submit([np.arange(1, 4)], False, deadline())  # the caller knows of other requests
    assert (await unsure)["total"] == 6
    (alone,) = batcher.submit([np.arange(1, 4)], False, deadline(), alone=True)
    assert (await alone)["total"] == 6
    assert recorder.threads[1:] == [loop_thread] != recorder.threads[:1]  # alone, nothing queued: no hand-off
    recorder.hold_first, recorder.batches, recorder.threads = True, [], []
    first = batcher.submit([np.arange(1, 3), np.arange(1, 2)], False, deadline(), alone=True)
    second = batcher.submit([np.arange(1, 5)], False, deadline(), alone=True)  # queued behind the first: company
    await wait_started(recorder)
    recorder.release.set()
    assert [r["total"] for r in await asyncio.gather(*first, *second)] == [3, 1, 10]
    assert loop_thread not in recorder.threads
    await batcher.close()


async def test_a_batch_is_bounded_by_its_padded_tokens() -> None:
    recorder = Recorder(hold_first=True)
    policy = BatchPolicy(max_batch_size=32, batches_in_flight=1, max_batch_tokens=128)
    batcher = Batcher(recorder, policy, PadRule(0), ("total", "length"))
    first = batcher.submit([np.array([1])], False, deadline())
    await wait_started(recorder)  # what arrives now queues up together
    long = batcher.submit([np.arange(1, 65) for _ in range(5)], False, deadline())
    short = batcher.submit([np.arange(1, 5) for _ in range(8)], False, deadline())
    recorder.release.set()
    await asyncio.gather(*first, *long, *short)
    shapes = [b.shape for b in recorder.batches[1:]]
    assert all(rows * width <= 128 for rows, width in shapes), shapes
    assert shapes == [(2, 64), (2, 64), (2, 64), (7, 4)]  # long sequences batch small, short ones still wide
    await batcher.close()


async def test_a_batch_with_maps_is_bounded_by_its_attention_cells() -> None:
    recorder = Recorder(hold_first=True)
    policy = BatchPolicy(max_batch_size=32, batches_in_flight=1, max_explain_cells=2 * 16 * 16)
    batcher = Batcher(recorder, policy, PadRule(0), ("total", "length"), ("square",))
    first = batcher.submit([np.array([1])], False, deadline())
    await wait_started(recorder)
    explained = batcher.submit([np.arange(1, 17) for _ in range(5)], True, deadline())
    recorder.release.set()
    await asyncio.gather(*first, *explained)
    assert [b.shape for b in recorder.batches[1:]] == [(2, 16), (2, 16), (1, 16)]
    await batcher.close()


async def test_answers_and_explanations_never_share_a_batch() -> None:
    recorder = Recorder(hold_first=True)
    batcher = Batcher(recorder, BatchPolicy(max_batch_size=8, batches_in_flight=1), PadRule(0), ("total",), ("square",))
    first = batcher.submit([np.array([1])], False, deadline())
    await wait_started(recorder)
    plain = batcher.submit([np.array([2]), np.array([3])], False, deadline())
    explained = batcher.submit([np.array([4])], True, deadline())
    more = batcher.submit([np.array([5])], False, deadline())
    recorder.release.set()
    answers = await asyncio.gather(*first, *plain, *explained, *more)
    assert [b[:, 0].tolist() for b in recorder.batches[1:]] == [[2, 3, 5], [4]]
    assert "square" in answers[3]
    assert "square" not in answers[1]
    await batcher.close()


async def test_bulk_sequences_fill_the_room_ordinary_ones_leave() -> None:
    recorder = Recorder(hold_first=True)
    batcher = Batcher(recorder, BatchPolicy(max_batch_size=4, batches_in_flight=1), PadRule(0), ("total",))
    first = batcher.submit([np.array([1])], False, deadline())
    await wait_started(recorder)
    bulk = batcher.submit([np.array([100 + i]) for i in range(6)], False, deadline(), bulk=True)
    ordinary = batcher.submit([np.array([7]), np.array([8])], False, deadline())  # arrives after the bulk
    recorder.release.set()
    await asyncio.gather(*first, *bulk, *ordinary)
    batches = [b[:, 0].tolist() for b in recorder.batches[1:]]
    assert batches[0] == [7, 8, 100, 101]  # the ordinary requests first, bulk in the room left
    assert batches[1] == [102, 103, 104, 105]
    await batcher.close()


async def test_a_lone_batch_runs_inline_only_when_cheap() -> None:
    recorder = Recorder()
    policy = BatchPolicy(max_batch_size=8, inline_lone=True, inline_max_s=0.01)
    batcher = Batcher(recorder, policy, PadRule(0), ("total",), ("square",), per_token_s=0.001)
    loop_thread = threading.get_ident()
    await batcher.submit([np.arange(1, 6)], False, deadline(), alone=True)[0]  # 5 tokens: 5 ms estimated
    await batcher.submit([np.arange(1, 41)], False, deadline(), alone=True)[0]  # 40 tokens: 40 ms
    await batcher.submit([np.arange(1, 4)], True, deadline(), alone=True)[0]  # maps: never inline
    assert recorder.threads[0] == loop_thread
    assert recorder.threads[1] != loop_thread
    assert recorder.threads[2] != loop_thread
    await batcher.close()
