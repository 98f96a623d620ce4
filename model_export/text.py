"""How text becomes ids for an imported model, as a Hugging Face ``tokenizer.json`` the service can load.

Four sources: a keras-hub model's own preprocessor, rebuilt (``hub_text``; checked id for id by ``text_parity``);
the user's own ``tokenizer.json`` (copied in unchanged); a vocabulary file — a WordPiece vocabulary (``##`` pieces,
``[CLS]``/``[SEP]``) becomes BERT's tokenizer, a plain word list a whole-word one (lowercased, split on whitespace
and punctuation, unknown words → ``[UNK]``); or the model's own Keras ``TextVectorization`` layer, rebuilt as an
equivalent WordLevel tokenizer. Every one keeps character offsets, so the service maps each weight back to the text.
"""

from __future__ import annotations

import dataclasses
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from model_export import hub_text
from model_export.spm import SpmError
from model_format.text import TextTokenizer

UNK_TOKEN = "[UNK]"
PAD_TOKENS = ("[PAD]", "<pad>", "<PAD>")
START_END = (("[CLS]", "[SEP]"), ("<s>", "</s>"))  # the specials a BERT- or RoBERTa-style model was trained with
# TextVectorization's own punctuation pattern (keras/src/layers/preprocessing/text_vectorization.py).
TV_PUNCTUATION = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'
# tf.strings.split without a separator splits on ASCII whitespace only (not U+00A0, U+3000, ...).
TV_WHITESPACE = "[ \t\n\x0b\x0c\r]+"
TV_STANDARDIZE = (None, "lower", "strip_punctuation", "lower_and_strip_punctuation")


class TextError(ValueError):
    """The text side of an import (tokenizer, vocabulary, TextVectorization) cannot be used; says why."""


@dataclass(frozen=True)
class Text:
    """A tokenizer for the folder, the bytes to write as its ``tokenizer.json``, and where it came from."""

    tokenizer: Tokenizer
    data: bytes
    origin: str
    pad_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    sequence_length: int | None = None  # the preprocessor's, where one came with the model
    truncation: str = "round_robin"
    preprocessor: Any = None  # keras-hub's original, for the parity gate

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    @property
    def word_piece_vocabulary(self) -> bool:
        return self.origin == "vocab" and self.details.get("kind") == "wordpiece"

    def served(self, max_length: int, id_dtype: Any = np.int32) -> TextTokenizer:
        """The tokenizer exactly as the service will load it from this folder."""
        return TextTokenizer(
            None, np.dtype(id_dtype), max_length, data=self.data.decode("utf-8"), truncation=self.truncation
        )


def from_hub(preprocessor: Any) -> Text:
    """A keras-hub preprocessor (or tokenizer) rebuilt as tokenizer.json; ``text_parity`` checks it."""
    try:
        rebuilt = hub_text.from_preprocessor(preprocessor)
    except (hub_text.HubTextError, SpmError) as exc:
        raise TextError(str(exc)) from exc
    details = {"preprocessor": type(preprocessor).__name__, "kind": rebuilt.kind, "truncation": rebuilt.truncation}
    built = _built(rebuilt.tokenizer, "keras_hub", rebuilt.pad_id, details)
    return dataclasses.replace(
        built, sequence_length=rebuilt.sequence_length, truncation=rebuilt.truncation, preprocessor=preprocessor
    )


def with_preprocessor(chosen: Text, preprocessor: Any, sequence_length: int | None, truncation: str) -> Text:
    """The user's tokenizer, to be checked against the keras-hub preprocessor the model came with."""
    return dataclasses.replace(
        chosen, preprocessor=preprocessor, sequence_length=sequence_length, truncation=truncation
    )


def check_specials(text: Text) -> None:
    """A vocabulary holding a start and an end token ([CLS]/[SEP], <s>/</s>) belongs to a model trained with them
    around every text: a tokenizer that adds neither would feed it texts it never saw. Refuse it."""
    for start, end in START_END:
        if text.tokenizer.token_to_id(start) is None or text.tokenizer.token_to_id(end) is None:
            continue
        encoded = text.tokenizer.encode("a", "b") if text.tokenizer.post_processor is not None else None
        if encoded is None or start not in encoded.tokens:
            raise TextError(
                f"the vocabulary holds {start} and {end}, so the model was trained with texts wrapped in them, but the "
                "tokenizer adds no special tokens (its tokenizer.json has no post_processor template); give the "
                "tokenizer.json the model was trained with, or its WordPiece vocabulary with --vocab"
            )


def from_tokenizer_file(path: Path) -> Text:
    """A Hugging Face ``tokenizer.json`` of any model type, written to the folder byte for byte."""
    try:
        data = path.read_bytes()
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    except FileNotFoundError as exc:
        raise TextError(f"{path}: no such tokenizer file") from exc
    except Exception as exc:  # tokenizers raises its own exception type for a malformed file
        raise TextError(f"{path}: not a Hugging Face tokenizer.json ({str(exc)[:120]})") from exc
    padding = tokenizer.padding
    pad_id = padding["pad_id"] if padding else _first_id(tokenizer, PAD_TOKENS)
    details = {"file": path.name, "model": type(tokenizer.model).__name__}
    if tokenizer.post_processor is not None:  # special tokens it adds (e.g. [CLS] … [SEP]): the service adds them too
        details["post_processor"] = type(tokenizer.post_processor).__name__
    return Text(tokenizer, data, "tokenizer", pad_id, details)


def from_vocab_file(path: Path) -> Text:
    """BERT's WordPiece tokenizer over a WordPiece vocabulary (``##`` pieces, or ``[CLS]`` and ``[SEP]``); otherwise
    a WordLevel tokenizer over the word list: lowercase, split on whitespace and punctuation."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise TextError(f"{path}: no such vocabulary file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TextError(f"{path}: unreadable vocabulary ({exc})") from exc
    vocab: dict[str, int] = {}
    for number, token in enumerate(lines):
        if token in vocab and token:
            raise TextError(f"{path}:{number + 1}: the token {token!r} is already on line {vocab[token] + 1}")
        vocab.setdefault(token, number)
    if UNK_TOKEN not in vocab:
        raise TextError(f"{path}: the vocabulary has no {UNK_TOKEN} token for unknown words (add a line '[UNK]')")
    if any(token.startswith("##") for token in vocab) or ("[CLS]" in vocab and "[SEP]" in vocab):
        return _word_piece(vocab, path.name, len(lines))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    pad_id = _first_id(tokenizer, PAD_TOKENS)
    return _built(tokenizer, "vocab", pad_id, {"file": path.name, "lines": len(lines)})


def _word_piece(vocab: dict[str, int], name: str, lines: int) -> Text:
    """BERT's own tokenization: clean, split CJK, strip accents and lowercase for an uncased vocabulary (one with no
    capital letters), split on whitespace and punctuation, WordPiece with ``##``, ``[CLS] a [SEP] b [SEP]``."""
    missing = [token for token in ("[CLS]", "[SEP]") if token not in vocab]
    if missing:
        raise TextError(f"{name}: a WordPiece vocabulary without {missing}: BERT-style models need [CLS] and [SEP]")
    uncased = not any(c.isupper() for token in vocab if not token.startswith("[") for c in token)
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=UNK_TOKEN, max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=uncased, lowercase=uncased
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    details = {"file": name, "lines": lines, "kind": "wordpiece", "lowercase": uncased}
    return _built(tokenizer, "vocab", _first_id(tokenizer, PAD_TOKENS), details)


def from_text_vectorization(layer: Any) -> Text:
    """The vocabulary and standardization of a Keras ``TextVectorization`` layer as a tokenizer.json.

    Id 0 is TextVectorization's padding ("") and 1 its out-of-vocabulary token, as in the layer. It
    lowercases ASCII letters only and splits on ASCII whitespace only (``tf.strings.lower`` / ``split``),
    so the tokenizer does exactly that rather than Unicode lower-casing.
    """
    config = layer.get_config()
    standardize, split = config.get("standardize"), config.get("split")
    if config.get("output_mode") != "int":
        raise TextError(f"{layer.name}: TextVectorization output_mode {config.get('output_mode')!r} is not 'int'")
    if config.get("ngrams") is not None:
        raise TextError(f"{layer.name}: TextVectorization with ngrams has no tokenizer.json equivalent")
    if standardize not in TV_STANDARDIZE or split not in ("whitespace", "character"):
        raise TextError(
            f"{layer.name}: TextVectorization standardize={standardize!r}, split={split!r}: only the built-in "
            "modes have a tokenizer.json equivalent (not custom callables)"
        )
    vocabulary = [str(token) for token in layer.get_vocabulary(include_special_tokens=True)]
    tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocabulary)}, unk_token=vocabulary[1]))
    steps: list[Any] = []
    if standardize in ("lower", "lower_and_strip_punctuation"):
        steps += [normalizers.Replace(c, c.lower()) for c in string.ascii_uppercase]
    if standardize in ("strip_punctuation", "lower_and_strip_punctuation"):
        steps.append(normalizers.Replace(Regex(TV_PUNCTUATION), ""))
    if steps:
        tokenizer.normalizer = normalizers.Sequence(steps)
    if split == "whitespace":
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(TV_WHITESPACE), behavior="removed")
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    details = {"layer": layer.name, "standardize": standardize, "split": split, "vocabulary": len(vocabulary)}
    return _built(tokenizer, "text_vectorization", 0, details)


def _built(tokenizer: Tokenizer, origin: str, pad_id: int | None, details: dict[str, Any]) -> Text:
    data = tokenizer.to_str().encode("utf-8")
    return Text(Tokenizer.from_str(data.decode("utf-8")), data, origin, pad_id, details)


def _first_id(tokenizer: Tokenizer, tokens: tuple[str, ...]) -> int | None:
    return next((i for i in map(tokenizer.token_to_id, tokens) if i is not None), None)
