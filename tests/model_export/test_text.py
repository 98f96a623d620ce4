"""Text → ids for imported models: TextVectorization rebuilt as tokenizer.json, vocabulary files, user tokenizers."""

from __future__ import annotations

from pathlib import Path

import keras
import pytest
import tensorflow as tf
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from model_export.text import TextError, from_text_vectorization, from_tokenizer_file, from_vocab_file

CORPUS = [
    "Hello world, it's GREAT!",
    "École naïve café STRASSE straße",
    "don't self-driving cars... x_y",
    "the cat sat on the mat",
    "ΑΒΓ αβγ 東京 emoji 🙂 here",
    "tabs\tand\nnewlines",
    "UNK [unk] pad",
]
MESSY = [
    "  Hello,   WORLD!! ",
    "école ÉCOLE Straße STRASSE",
    "don't\tself-driving\n\ncars… x_y",
    "[UNK] unk [PAD] <pad>",
    "a\u00a0b the\u3000cat\u2003sat \x1cmat\x85",
    "",
    "!!!  ...",
    "the cat's mat. 東京🙂 ΑΒΓ",
    "Hello\r\nworld\x0bthe\x0cend",
    "(((great))) great-great great_great",
]


def vectorizer(**options: object) -> keras.layers.TextVectorization:
    layer = keras.layers.TextVectorization(max_tokens=200, **options)
    layer.adapt(CORPUS)
    return layer


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"standardize": "lower"},
        {"standardize": "strip_punctuation"},
        {"standardize": None},
        {"split": "character"},
    ],
    ids=["default", "lower", "strip_punctuation", "no_standardize", "characters"],
)
def test_tokenizer_json_gives_exactly_the_ids_of_text_vectorization(options: dict[str, object]) -> None:
    layer = vectorizer(**options)
    tokenizer = from_text_vectorization(layer).tokenizer
    for text in MESSY:
        expected = layer(tf.constant([text])).numpy()[0].tolist()
        encoding = tokenizer.encode(text, add_special_tokens=False)
        assert encoding.ids == expected, text
        for token_id, (start, end) in zip(encoding.ids, encoding.offsets, strict=True):
            # each token's character span, vectorized alone, is that very token
            assert layer(tf.constant([text[start:end]])).numpy()[0].tolist() == [token_id], (text, start, end)


def test_offsets_point_at_the_words_without_the_stripped_punctuation() -> None:
    tokenizer = from_text_vectorization(vectorizer()).tokenizer
    text = "  Hello,   WORLD!! don't"
    encoding = tokenizer.encode(text, add_special_tokens=False)
    assert [text[a:b] for a, b in encoding.offsets] == ["Hello", "WORLD", "don't"]
    assert encoding.tokens == ["hello", "world", "dont"]


def test_text_vectorization_ids_start_with_padding_and_unknown() -> None:
    text = from_text_vectorization(vectorizer())
    assert text.origin == "text_vectorization"
    assert text.pad_id == 0
    assert text.tokenizer.id_to_token(1) == "[UNK]"
    assert text.tokenizer.encode("zzzz-unseen", add_special_tokens=False).ids == [1]
    assert Tokenizer.from_str(text.data.decode()).get_vocab_size() == text.vocab_size


def test_custom_standardization_is_refused() -> None:
    layer = keras.layers.TextVectorization(max_tokens=20, standardize=lambda x: x, vocabulary=["a"])
    with pytest.raises(TextError, match="custom callables"):
        from_text_vectorization(layer)


def test_vocab_file_lowercases_and_splits_on_whitespace_and_punctuation(tmp_path: Path) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\nhello\n,\nworld\n!\ncafé\n")
    text = from_vocab_file(path)
    assert (text.origin, text.pad_id, text.vocab_size) == ("vocab", 0, 7)
    source = "Hello,  WORLD! Café unknown"
    encoding = text.tokenizer.encode(source, add_special_tokens=False)
    assert encoding.ids == [2, 3, 4, 5, 6, 1]
    assert [source[a:b] for a, b in encoding.offsets] == ["Hello", ",", "WORLD", "!", "Café", "unknown"]


def test_vocab_file_with_a_blank_padding_line_as_text_vectorization_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vectorizer().get_vocabulary()) + "\n", encoding="utf-8")
    text = from_vocab_file(path)
    assert text.tokenizer.token_to_id("[UNK]") == 1
    assert text.tokenizer.encode("hello", add_special_tokens=False).ids == [text.tokenizer.token_to_id("hello")]


def test_vocab_without_unk_or_with_a_repeated_token_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\nhello\n")
    with pytest.raises(TextError, match=r"no \[UNK\]"):
        from_vocab_file(path)
    path.write_text("[PAD]\n[UNK]\nhello\nhello\n")
    with pytest.raises(TextError, match=r"vocab\.txt:4"):
        from_vocab_file(path)
    with pytest.raises(TextError, match="no such"):
        from_vocab_file(tmp_path / "absent.txt")


def test_a_users_tokenizer_json_is_kept_byte_for_byte(tmp_path: Path) -> None:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<pad>"], show_progress=False)
    tokenizer.train_from_iterator(CORPUS * 3, trainer=trainer)
    path = tmp_path / "tokenizer.json"
    path.write_text(tokenizer.to_str(pretty=True))
    text = from_tokenizer_file(path)
    assert text.data == path.read_bytes()
    assert (text.origin, text.pad_id, text.details["model"]) == ("tokenizer", 1, "BPE")
    path.write_text("{not json")
    with pytest.raises(TextError, match=r"not a Hugging Face tokenizer\.json"):
        from_tokenizer_file(path)
