"""The PNG renderer's pure helpers and its drawing, on made-up predictions (no server here; see tests/e2e)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.picture.client import Explanation, PictureError, parse_prediction, predict_path
from service.picture.drawing import save_png
from service.picture.layout import layout_for, shorten, tick_layout, title_of
from tests.conftest import ROOT

DARKEST_BLUE = (8, 48, 107)  # the top of ColorBrewer "Blues", the scale's maximum
RDBU_BLUE = (5, 48, 97)  # the blue end of matplotlib's "RdBu": what pushed hardest toward the class


def row(length: int = 4, layers: int = 2, heads: int = 3, explain: bool = True) -> dict[str, object]:
    rng = np.random.default_rng(length)
    matrices = rng.random((layers, heads, length, length))
    answer: dict[str, object] = {
        "label": "positive",
        "probabilities": {"negative": 0.1, "neutral": 0.2, "positive": 0.7},
        "truncated": False,
        "attention": (np.arange(1, length + 1) / np.arange(1, length + 1).sum()).tolist(),
        "tokens": [f"tok{i}" for i in range(length)],
        "offsets": [[i, i + 1] for i in range(length)],
    }
    if explain:
        answer["self_attention"] = (matrices / matrices.sum(-1, keepdims=True)).tolist()
        answer["rollout"] = np.full(length, 1 / length).tolist()
        answer["occlusion"] = np.linspace(-0.2, 0.5, length).tolist()
    return answer


def explanation(length: int = 4, layers: int = 2, heads: int = 3, explain: bool = True) -> Explanation:
    payload = {"predictions": [row(length, layers, heads, explain)]}
    return parse_prediction(payload, "sentiment", "3", "costs $5 and $6, worth it")


def test_predict_path_quotes_names_and_picks_the_version() -> None:
    assert predict_path("sentiment", None) == "/v1/models/sentiment:predict"
    assert predict_path("sentiment", "2") == "/v1/models/sentiment/versions/2:predict"
    assert predict_path("a/b c", None) == "/v1/models/a%2Fb%20c:predict"


def test_parse_prediction_keeps_every_output_with_its_shape() -> None:
    parsed = explanation(length=5, layers=2, heads=3)
    assert parsed.tokens == ["tok0", "tok1", "tok2", "tok3", "tok4"]
    assert parsed.attention.shape == (5,)
    assert parsed.rollout is not None
    assert parsed.rollout.shape == (5,)
    assert parsed.self_attention is not None
    assert parsed.self_attention.shape == (2, 3, 5, 5)
    assert (parsed.model, parsed.version, parsed.label) == ("sentiment", "3", "positive")
    assert list(parsed.probabilities) == ["negative", "neutral", "positive"]
    assert parsed.occlusion is not None
    assert parsed.occlusion.shape == (5,)
    plain = parse_prediction({"predictions": [row(explain=False)]}, "m", "1", "x")
    assert plain.self_attention is None
    assert plain.rollout is None
    assert plain.occlusion is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"error": "unknown model"}, "not a prediction"),
        ({"predictions": []}, "not a prediction"),
        ({"predictions": [{**row(), "tokens": ["only-one"]}]}, "does not match its tokens"),
        ({"predictions": [{**row(), "self_attention": [[[[1.0]]]]}]}, "does not match its tokens"),
        ({"predictions": [{**row(), "attention": "high"}]}, "not a prediction"),
    ],
)
def test_parse_prediction_refuses_answers_of_the_wrong_shape(payload: object, message: str) -> None:
    with pytest.raises(PictureError, match=message):
        parse_prediction(payload, "m", "1", "x")


def test_title_names_model_version_label_and_every_probability_in_order() -> None:
    assert title_of(explanation()) == "sentiment v3: positive    (negative 0.100   neutral 0.200   positive 0.700)"


def test_shorten_cuts_with_an_ellipsis() -> None:
    assert shorten("battery", 14) == "battery"
    assert shorten("incomprehensibilities", 8) == "incompr…"


@pytest.mark.parametrize("count", [1, 5, 17, 64, 128, 512])
@pytest.mark.parametrize("span_in", [2.6, 6.5, 20.0])
def test_tick_labels_never_overlap_and_stay_readable(count: int, span_in: float) -> None:
    ticks = tick_layout(["word"] * count, span_in)
    room_pt = span_in * 72 / count
    assert 5.0 <= ticks.size <= 9.0
    assert ticks.step * room_pt >= ticks.size  # labels drawn are at least a font size apart
    assert ticks.step == 1 or (ticks.step - 1) * room_pt < ticks.size * 1.15  # and no sparser than needed


def test_labels_stand_upright_only_when_they_do_not_fit_across() -> None:
    assert tick_layout(["i", "love", "it"], 10.0).rotation == 0
    assert tick_layout(["incomprehensible"] * 40, 10.0).rotation == 90


def test_layout_grows_with_layers_and_sequence_length() -> None:
    small, deep = layout_for(explanation(length=4, layers=1)), layout_for(explanation(length=4, layers=3))
    assert deep.height > small.height
    assert deep.width == small.width
    assert layout_for(explanation(length=60)).width > layout_for(explanation(length=4)).width
    assert layout_for(explanation(explain=False)).grid == 0


@pytest.mark.parametrize("explain", [True, False])
def test_save_png_writes_the_picture_it_reports(tmp_path: Path, explain: bool) -> None:
    output = tmp_path / "attention.png"
    width, height = save_png(explanation(length=6, explain=explain), output, dpi=80)
    with Image.open(output) as image:
        image.verify()
    with Image.open(output) as image:
        assert image.format == "PNG"
        assert image.size == (width, height)
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    # Every scale runs from 0 to the largest weight shown, so its top colour appears in the picture.
    assert (np.abs(pixels.astype(int) - DARKEST_BLUE).max(axis=1) <= 2).any()
    assert len(np.unique(pixels, axis=0)) > 50
    # What changed the prediction is symmetric around 0: its largest value (0.5) takes the blue end.
    assert (np.abs(pixels.astype(int) - RDBU_BLUE).max(axis=1) <= 2).any() == explain


def test_the_serving_path_never_imports_matplotlib_or_this_module() -> None:
    code = (
        "import sys; import service.__main__ as m; from service.app import create_app; "
        "from service.settings import Settings; create_app(Settings(model_repository='models')); "
        "print(sorted(n for n in sys.modules if n.split('.')[0] == 'matplotlib' or n.startswith('service.picture')))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
