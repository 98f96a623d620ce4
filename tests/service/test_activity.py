"""The activity board across processes, and the wide session a lone batch may take."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np

from service.activity import ActivityBoard
from service.runtime import OnnxModel, RuntimeOptions
from tests.conftest import BUNDLED


def test_one_process_alone_is_alone_until_a_second_batch_starts() -> None:
    board = ActivityBoard()
    with board.running() as first, board.running() as second:
        assert (first, second) == (True, False)
    with board.running() as again:
        assert again


def _hold(folder: Path, started: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event) -> None:
    with ActivityBoard(folder).running():
        started.set()
        release.wait(30)


def test_workers_see_each_others_batches(tmp_path: Path) -> None:
    here = ActivityBoard(tmp_path)
    context = multiprocessing.get_context("spawn")
    started, release = context.Event(), context.Event()
    other = context.Process(target=_hold, args=(tmp_path, started, release))
    other.start()
    try:
        assert started.wait(60)
        with here.running() as alone:
            assert not alone  # the other worker runs a batch
    finally:
        release.set()
        other.join(30)
    assert other.exitcode == 0
    with here.running() as alone:
        assert alone  # its slot went back to 0 when its batch ended
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board", "slot-0", "slot-1"]


def test_a_lone_batch_takes_a_wider_session_with_the_same_answers() -> None:
    options = RuntimeOptions(intra_op_threads=1, lone_threads=2)
    model = OnnxModel(BUNDLED / "model.onnx", options)
    assert model.lone_session is not None
    assert model.lone_session.get_session_options().intra_op_num_threads == 2
    ids = np.array([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = (ids > 0).astype(np.int64)
    roles = ("probabilities", "attention", "self_attention")
    narrow, wide = model.predict(ids, mask, roles), model.predict(ids, mask, roles, lone=True)
    for role in roles:
        np.testing.assert_allclose(narrow[role], wide[role], atol=1e-6)
    assert OnnxModel(BUNDLED / "model.onnx", RuntimeOptions(intra_op_threads=2, lone_threads=2)).lone_session is None
