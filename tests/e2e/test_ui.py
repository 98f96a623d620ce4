"""The attention viewer in a real headless browser (Debian's chromium, driven by Playwright) against the real server.

Each value the page shows is checked against the same prediction fetched from the API. Playwright's sync API runs
its own event loop in this thread; these tests are synchronous, so no other loop is running while it does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import BUNDLED_REPOSITORY, ROOT
from tests.e2e.conftest import RunningServer, start_server

pytestmark = pytest.mark.e2e

SCREENSHOT = ROOT / "artifacts" / "ui-screenshot.png"
# Two spaces, a tab, an accent and a character outside the BMP: offsets count code points, JavaScript UTF-16 units.
TEXT = "I  love how this café\thandles, but the battery dies far too soon 😀!"
DARKEST = "rgb(8, 48, 107)"  # top of the colour scale
LIGHTEST = "rgb(247, 251, 255)"  # its bottom


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(BUNDLED_REPOSITORY, tmp_path_factory.mktemp("ui") / "server.log")
    yield running
    running.stop()


def predict(server: RunningServer, texts: list[str], **parameters: Any) -> httpx.Response:
    body = {"instances": texts, "parameters": {"attention": "all", **parameters}}
    return httpx.post(f"{server.url}/v1/models/sentiment:predict", json=body, timeout=30)


def explain(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.click("#submit")


def token_data(page: Page, card: int = 0) -> list[dict[str, str]]:
    tokens = page.locator("#sequences > li").nth(card).locator(".token")
    expect(tokens.first).to_be_visible()
    data: list[dict[str, str]] = tokens.evaluate_all(
        "spans => spans.map(s => ({ ...s.dataset, text: s.textContent, "
        "background: getComputedStyle(s).backgroundColor }))"
    )
    return data


def luminance(rgb: str) -> float:
    red, green, blue = (int(v) for v in re.findall(r"\d+", rgb)[:3])
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def assert_shaded_by(tokens: list[dict[str, str]], weights: list[float]) -> None:
    """Each token carries its weight, and a larger weight is never lighter; the largest gets the darkest colour."""
    assert [float(t["weight"]) for t in tokens] == pytest.approx(weights, abs=1e-7)
    ordered = sorted(tokens, key=lambda t: float(t["weight"]))
    shades = [luminance(t["background"]) for t in ordered]
    assert shades == sorted(shades, reverse=True)
    assert ordered[-1]["background"] == DARKEST
    assert shades[0] > shades[-1]


def test_page_shows_label_shaded_tokens_and_heatmap_as_the_api_returns_them(
    page: Page, server: RunningServer, console: list[str]
) -> None:
    expected = predict(server, [TEXT]).json()["predictions"][0]
    explain(page, TEXT)

    card = page.locator("#sequences > li").first
    expect(card.locator(".badge")).to_have_text(expected["label"])
    shown = card.locator(".prob").evaluate_all(
        "items => items.map(i => [i.querySelector('dt').textContent, i.querySelector('.prob-value').textContent])"
    )
    assert shown == [[label, f"{p:.3f}"] for label, p in expected["probabilities"].items()]
    expect(page.locator("#answered-by")).to_contain_text("sentiment · version 1")

    tokens = token_data(page)
    assert [t["token"] for t in tokens] == expected["tokens"]
    assert [float(t["attention"]) for t in tokens] == pytest.approx(expected["attention"], abs=1e-7)
    assert [float(t["rollout"]) for t in tokens] == pytest.approx(expected["rollout"], abs=1e-7)
    assert_shaded_by(tokens, expected["rollout"])  # the default view
    # Each token shows its own span of the text, and the characters between tokens are kept.
    assert [t["text"] for t in tokens] == [TEXT[start:end] for start, end in expected["offsets"]]
    expect(card.locator(".tokens")).to_have_text(TEXT, use_inner_text=False)
    expect(card.locator(".cut")).to_have_count(0)

    page.get_by_role("radio", name="Pooling attention").check()
    assert_shaded_by(token_data(page), expected["attention"])

    layer, head = 1, 2
    page.select_option("#layer", str(layer))
    page.select_option("#head", str(head))
    expect(page.locator("#heatmap")).to_have_attribute("aria-label", re.compile(rf"layer {layer + 1}, head {head + 1}"))
    cells = page.locator("#heatmap rect[data-row]").evaluate_all(
        "rects => rects.map(r => [+r.dataset.row, +r.dataset.col, +r.dataset.weight, r.getAttribute('fill')])"
    )
    matrix = expected["self_attention"][layer][head]
    assert len(cells) == len(matrix) ** 2
    for r, c, weight, _ in cells:
        assert weight == pytest.approx(matrix[r][c], abs=1e-7)
    darkest = max(cells, key=lambda cell: cell[2])
    assert darkest[3] == "rgb(8 48 107)"
    labels = page.locator("#heatmap .axis text").all_text_contents()
    assert labels[0::2] == labels[1::2] == [t[:11] + "…" if len(t) > 12 else t for t in expected["tokens"]]

    page.get_by_role("radio", name="Pooling attention").check()
    page.locator("#sequences .token").nth(2).focus()
    page.keyboard.press("ArrowRight")  # moved by keyboard, so the focus ring shows in the screenshot
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOT, full_page=True)
    assert console == []  # no script error, and nothing refused by the Content-Security-Policy


def test_the_default_view_spreads_the_shades_over_the_whole_scale(page: Page, server: RunningServer) -> None:
    """On the bundled model one text's pooling weights differ by a factor of 1.2-2: from 0 to max they all came out
    dark. The default is rollout from its smallest to its largest weight: the lightest token gets the lightest
    colour, the deciding word the darkest, and every exact weight stays on hover."""
    text = "I love how smooth the ride was"
    expected = predict(server, [text]).json()["predictions"][0]
    explain(page, text)
    tokens = token_data(page)
    expect(page.get_by_role("radio", name="Rollout")).to_be_checked()
    expect(page.get_by_role("radio", name="Min to max")).to_be_checked()
    by_weight = sorted(tokens, key=lambda t: float(t["weight"]))
    assert (by_weight[0]["background"], by_weight[-1]["background"]) == (LIGHTEST, DARKEST)
    assert by_weight[-1]["token"] == expected["tokens"][max(range(len(tokens)), key=expected["rollout"].__getitem__)]
    assert all(f"pooling attention {float(t['attention']):.4f}" in t["tip"] for t in tokens)


def test_keyboard_reaches_every_control_and_tokens_announce_their_weight(page: Page, server: RunningServer) -> None:
    expected = predict(server, [TEXT]).json()["predictions"][0]
    explain(page, TEXT)
    expect(page.locator("#sequences .token").first).to_be_visible()

    page.focus("#text")
    order = []
    for _ in range(12):  # bounded: the first token is the ninth stop after the text
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "(e => e.id || (e.name && `${e.name}=${e.value}`) || e.className || e.tagName)(document.activeElement)"
        )
        order.append(focused)
        if focused.startswith("token"):
            break
    stops = ["model", "version", "truncate", "occlusion", "SUMMARY", "submit", "shade=rollout", "scale=stretch"]
    assert order[:-1] == stops
    assert order[-1].startswith("token")

    token = page.locator(":focus")
    expect(token).to_have_attribute("data-index", "0")
    outline = token.evaluate("t => [getComputedStyle(t).outlineStyle, getComputedStyle(t).outlineWidth]")
    assert outline == ["solid", "3px"]  # focus is visible
    for index in (0, 1):
        label = token.get_attribute("aria-label") or ""
        assert label.startswith(f"“{expected['tokens'][index]}”: rollout")
        for kind, words in (("rollout", "rollout"), ("attention", "pooling attention")):
            announced = re.search(rf"{words} (\d+\.\d+)", label)
            assert announced is not None
            assert float(announced.group(1)) == pytest.approx(expected[kind][index], abs=5e-5)
        tip = token.evaluate("t => getComputedStyle(t, '::after').content")
        assert label in tip  # the same words appear beside the token, on focus as on hover
        page.keyboard.press("ArrowRight")
        token = page.locator(":focus")
    expect(token).to_have_attribute("data-index", "2")

    page.focus("#head")
    page.keyboard.press("Tab")
    expect(page.locator("#heatmap")).to_be_focused()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    weight = expected["self_attention"][0][0][1][1]
    expect(page.locator("#cell-readout")).to_contain_text(f"(row 2) attends to “{expected['tokens'][1]}” (column 2)")
    readout = page.locator("#cell-readout").text_content() or ""
    assert float(readout.rsplit(" ", 1)[1]) == pytest.approx(weight, abs=5e-5)


def test_api_errors_are_shown_and_truncation_marks_the_unread_text(page: Page, server: RunningServer) -> None:
    long_text = " ".join(["the room was clean but the staff were slow"] * 20)
    refused = predict(server, [long_text])
    assert refused.status_code == 400
    explain(page, long_text)
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_have_text(f"The service answered 400: {refused.json()['error']}")
    expect(page.locator("#results")).to_be_hidden()

    page.check("#truncate")
    page.click("#submit")
    expect(error).to_be_hidden()
    card = page.locator("#sequences > li").first
    expect(card.locator(".note")).to_contain_text("Truncated")
    expected = predict(server, [long_text], truncate=True).json()["predictions"][0]
    assert expected["truncated"] is True
    assert len(token_data(page)) == len(expected["tokens"])
    unread = long_text[expected["offsets"][-1][1] :]
    expect(card.locator(".cut")).to_have_text(unread)

    page.fill("#text", " \n \n")
    page.click("#submit")
    expect(error).to_have_text("Type some text first: one sequence per line.")


def test_each_line_is_a_sequence_and_the_heatmap_follows_the_chosen_one(page: Page, server: RunningServer) -> None:
    lines = ["What a wonderful morning.", "The train was late again and nobody said why."]
    expected = predict(server, lines).json()["predictions"]
    explain(page, "\n".join([lines[0], "", lines[1]]))  # blank lines are skipped
    expect(page.locator("#sequences > li")).to_have_count(2)
    for card, row in enumerate(expected):
        assert [t["token"] for t in token_data(page, card)] == row["tokens"]
        expect(page.locator("#sequences > li").nth(card).locator(".badge")).to_have_text(row["label"])
    expect(page.locator("#sequence-field")).to_be_visible()
    page.select_option("#sequence", "1")
    cells = page.locator("#heatmap rect[data-row]")
    expect(cells).to_have_count(len(expected[1]["tokens"]) ** 2)
    weights = cells.evaluate_all("rects => rects.map(r => +r.dataset.weight)")
    flat = [w for query in expected[1]["self_attention"][0][0] for w in query]
    assert weights == pytest.approx(flat, abs=1e-7)


def test_what_changed_the_prediction_is_shaded_on_a_diverging_scale(page: Page, server: RunningServer) -> None:
    """The third shading: each token's occlusion value, blue toward the predicted class, red against it, white 0."""
    text = "The crew was wonderful but the delay was terrible"
    (expected,) = predict(server, [text], explain="occlusion").json()["predictions"]
    explain(page, text)
    page.get_by_role("radio", name="What changed the prediction").check()
    data = token_data(page)
    assert [float(d["occlusion"]) for d in data] == pytest.approx(expected["occlusion"], abs=1e-6)
    values = expected["occlusion"]
    strongest = max(range(len(values)), key=lambda i: abs(values[i]))
    red, _, blue = (int(v) for v in re.findall(r"\d+", data[strongest]["background"])[:3])
    assert (blue > red) == (values[strongest] > 0)  # blue toward the class, red against it
    neutral = min(range(len(values)), key=lambda i: abs(values[i]))
    assert luminance(data[neutral]["background"]) > luminance(data[strongest]["background"])  # near 0: near white
    legend = page.locator("#sequences .card-foot .legend").first
    expect(legend).to_contain_text("against")
    expect(legend).to_contain_text(f"toward {expected['label']}")
    assert f"what changed the prediction {data[0]['occlusion'][:4]}" in data[0]["tip"]
