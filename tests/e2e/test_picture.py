"""``python -m service.picture`` against the real server: the PNG it writes, and the errors it reports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import BUNDLED_REPOSITORY, ROOT
from tests.e2e.conftest import RunningServer, start_server

pytestmark = pytest.mark.e2e
TEXT = "The staff were kind, but the room cost $120 and was far too noisy."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(BUNDLED_REPOSITORY, tmp_path_factory.mktemp("picture") / "server.log")
    yield running
    running.stop()


def picture(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-W", "error", "-m", "service.picture", "--url", server.url, *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_writes_a_png_of_sensible_size_for_the_prediction(server: RunningServer, tmp_path: Path) -> None:
    output = tmp_path / "attention.png"
    result = picture(server, "--model", "sentiment", "--version", "1", "--dpi", "100", "--output", str(output), TEXT)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no warning either (run with -W error)
    expected = httpx.post(f"{server.url}/v1/models/sentiment:predict", json={"instances": [TEXT]}, timeout=30).json()
    assert result.stdout.strip().endswith(f"px): {expected['predictions'][0]['label']}")

    with Image.open(output) as image:
        image.verify()  # chunks and checksums are intact
    with Image.open(output) as image:
        assert image.format == "PNG"
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"))
    assert f"({width}×{height} px)" in result.stdout
    # Room for the token strips and a 2 × 4 grid of heatmaps at 100 dpi, without being a poster.
    assert 900 <= width <= 4000
    assert 700 <= height <= 4000
    assert (np.abs(pixels.reshape(-1, 3).astype(int) - (8, 48, 107)).max(axis=1) <= 2).any()  # the scale's top


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope"], "the service answered 404: unknown model 'nope'"),
        (["--model", "sentiment", "--version", "9"], "the service answered 404"),
    ],
)
def test_api_errors_end_with_a_one_line_message(
    server: RunningServer, tmp_path: Path, args: list[str], message: str
) -> None:
    output = tmp_path / "never.png"
    result = picture(server, *args, "--output", str(output), TEXT)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {message}")
    assert "Traceback" not in result.stderr
    assert not output.exists()
