"""How a version's text becomes ids (model_format/text.py): pairs through the template, cutting like keras-hub's
packer, offsets and which text each token came from — the code the service serves with and the import gate checks."""

from __future__ import annotations

import numpy as np
import pytest

from model_format.text import TextTokenizer, round_robin, waterfall
from tests.conftest import BUNDLED
from tests.service.graphs import pair_tokenizer


@pytest.mark.parametrize(
    ("lengths", "room", "kept"),
    [((3, 20), 10, (3, 7)), ((20, 3), 10, (7, 3)), ((8, 8), 10, (5, 5)), ((8, 8), 9, (5, 4)), ((2, 2), 10, (2, 2))],
)
def test_round_robin_deals_the_room_one_token_at_a_time(
    lengths: tuple[int, int], room: int, kept: tuple[int, int]
) -> None:
    assert round_robin(lengths, room) == kept


def test_waterfall_lets_the_first_text_take_what_it_needs() -> None:
    assert waterfall((8, 8), 10) == (8, 2)
    assert waterfall((20, 3), 10) == (10, 0)
    assert waterfall((2, 3), 10) == (2, 3)


@pytest.fixture
def pairs(tmp_path: object) -> TextTokenizer:
    data = pair_tokenizer().to_str()
    return TextTokenizer(None, np.dtype(np.int64), 16, data=data)


def test_a_pair_is_joined_by_the_template_with_segments_and_sources(pairs: TextTokenizer) -> None:
    (encoded,) = pairs.encode_pairs([("good food", "slow service")])
    assert encoded.tokens[0] == "[CLS]"
    assert [int(s) for s in encoded.sources] == [-1, 0, 0, -1, 1, 1, -1]
    assert [int(t) for t in encoded.type_ids] == [0, 0, 0, 0, 1, 1, 1]
    assert encoded.offsets[4] == (0, 4)  # "slow", in the second text
    assert pairs.pairs
    assert pairs.special_ids == {8000, 8001}  # the template's, not [PAD] and [UNK]


def test_cutting_keeps_the_specials_and_matches_the_uncut_encoding_where_nothing_is_cut(pairs: TextTokenizer) -> None:
    (whole,) = pairs.encode_pairs([("good food", "slow service")])
    (cut,) = pairs.encode_pairs([("good food", "slow service")], cut=True)
    assert cut.tokens == whole.tokens
    assert cut.offsets == whole.offsets
    assert not cut.cut
    np.testing.assert_array_equal(cut.type_ids, whole.type_ids)


def test_a_long_pair_is_cut_to_the_maximum_longer_text_first(pairs: TextTokenizer) -> None:
    long = " ".join(["good"] * 3000)
    (encoded,) = pairs.encode_pairs([("short text", long)], cut=True)
    assert len(encoded.ids) == 16
    assert encoded.cut
    assert list(encoded.sources).count(0) == 2
    assert list(encoded.sources).count(1) == 16 - 3 - 2
    (both,) = pairs.encode_pairs([(long, long)], cut=True)  # 3,000 tokens each: no overflow pieces multiplied out
    assert [int(s) for s in both.sources].count(0) == 7
    assert [int(s) for s in both.sources].count(1) == 6
    (single,) = pairs.encode([long], cut=True)
    assert single.tokens[0] == "[CLS]"
    assert single.tokens[-1] == "[SEP]"
    assert len(single.ids) == 16


def test_a_tokenizer_without_a_template_reads_one_text() -> None:
    plain = TextTokenizer(BUNDLED / "tokenizer.json", np.dtype(np.int64), 128)
    assert not plain.pairs
    (encoded,) = plain.encode(["good food"])
    assert list(encoded.sources) == [0, 0]
    assert list(encoded.type_ids) == [0, 0]
    (cut,) = plain.encode([" ".join(["good"] * 300)], cut=True)
    assert len(cut.ids) == 128
    assert cut.cut


def test_an_unknown_truncation_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown truncation 'middle'"):
        TextTokenizer(BUNDLED / "tokenizer.json", np.dtype(np.int64), 8, truncation="middle")
