"""A large answer is encoded off the event loop: other work on the loop runs while it is encoded, and the JSON is
the same as encoding it at once."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest

from service.protocols import large

pytestmark = pytest.mark.anyio


async def test_the_loop_runs_other_work_while_a_large_answer_is_encoded() -> None:
    rng = np.random.default_rng(0)
    content = {"predictions": [{"self_attention": rng.random((12, 12, 128, 128), dtype=np.float32)} for _ in range(2)]}
    values = sum(p["self_attention"].size for p in content["predictions"])
    ticks = 0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    body = await large.encode(content, values)
    done.set()
    await ticker
    assert ticks > 10  # encoded at once on the loop, the ticker would not have run in between
    assert body == orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


async def test_a_small_answer_is_encoded_at_once() -> None:
    content = {"predictions": [{"attention": np.array([0.5, 0.5], np.float32)}]}
    assert await large.encode(content, 2) == b'{"predictions":[{"attention":[0.5,0.5]}]}'
