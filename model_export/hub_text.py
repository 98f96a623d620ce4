"""A keras-hub preprocessor (or tokenizer) as a Hugging Face ``tokenizer.json`` that gives the very same ids.

Three tokenizer kinds, each rebuilt from its own settings: WordPiece (BERT, DistilBERT, ELECTRA: keras-hub's split on
whitespace, punctuation and CJK, optional accent stripping, then NFKC case folding), byte-level BPE (RoBERTa: its
vocabulary and merges) and SentencePiece (ALBERT, DeBERTaV3: the model's protobuf, ``model_export.spm``). The
preprocessor's packer gives the template (``[CLS] a [SEP] b [SEP]``, ``<s> a </s></s> b </s>``) with its segment
ids and the longest sequence; its truncation (``round_robin`` or ``waterfall``) goes into the signature. Whether it
really is the same is not assumed: ``text_parity`` tokenizes a probe set both ways and refuses any difference.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from model_export import hub
from model_export.spm import spm_tokenizer

# keras-hub's WordPiece split (keras_hub/src/tokenizers/word_piece_tokenizer.py): RE2's \s is ASCII whitespace.
WHITESPACE = r"[ \t\n\f\r]|\p{Cc}|\p{Cf}"
PUNCTUATION = r"[!-/]|[:-@]|[\[-`]|[{-~]|[\p{P}]"
CJK = (
    r"[\x{4E00}-\x{9FFF}]|[\x{3400}-\x{4DBF}]|[\x{20000}-\x{2A6DF}]|[\x{2A700}-\x{2B73F}]|[\x{2B740}-\x{2B81F}]"
    r"|[\x{2B820}-\x{2CEAF}]|[\x{F900}-\x{FAFF}]|[\x{2F800}-\x{2FA1F}]"
)
FOLD_PLANES = (*range(0, 0x40000), *range(0xE0000, 0xE1000))  # BMP, SMP, SIP, TIP and tags / variation selectors


class HubTextError(ValueError):
    """The keras-hub preprocessor has no faithful tokenizer.json; the message says what."""


@dataclass(frozen=True)
class HubText:
    """The tokenizer.json rebuilt from keras-hub, and what the signature records of its preprocessor."""

    tokenizer: Tokenizer
    sequence_length: int | None
    truncation: str
    kind: str
    pad_id: int | None


def from_preprocessor(preprocessor: Any) -> HubText:
    """The tokenizer of a keras-hub preprocessor (or of a bare keras-hub tokenizer), template included."""
    keras_hub = hub.require()
    tokenizer = getattr(preprocessor, "tokenizer", preprocessor)
    packer = _packer(preprocessor)
    if isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer):
        built, kind = _word_piece(tokenizer), "wordpiece"
    elif isinstance(tokenizer, keras_hub.tokenizers.BytePairTokenizer):
        built, kind = _byte_pair(tokenizer), "byte_level_bpe"
    elif isinstance(tokenizer, keras_hub.tokenizers.SentencePieceTokenizer):
        built, kind = _sentence_piece(tokenizer), "sentencepiece"
    else:
        raise HubTextError(f"keras-hub tokenizer {type(tokenizer).__name__} has no tokenizer.json equivalent here")
    start, separator, end = _template_values(tokenizer, packer)
    template = _template(tokenizer, start, separator, end)
    # Byte-level BPE tokens carry their leading space ("Ġword"); trimmed, each offset spans the word alone.
    trim = [processors.ByteLevel(trim_offsets=True)] if kind == "byte_level_bpe" else []
    built.post_processor = processors.Sequence([*trim, template]) if trim else template
    length = getattr(packer, "sequence_length", None) if packer is not None else None
    truncation = getattr(packer, "truncate", "round_robin") if packer is not None else "round_robin"
    pad = getattr(tokenizer, "pad_token_id", None)
    return HubText(built, length, str(truncation), kind, int(pad) if pad is not None else None)


def _packer(preprocessor: Any) -> Any:
    if not hasattr(preprocessor, "packer"):
        return None
    if preprocessor.packer is None:  # keras-hub builds its packer on first use
        preprocessor.build(None)
    return preprocessor.packer


def _template_values(tokenizer: Any, packer: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """Start, separator and end values of the packer (ids or tokens), or the tokenizer's start/end tokens."""
    if packer is not None:
        return list(packer.start_value or []), list(packer.sep_value or []), list(packer.end_value or [])
    start, end = getattr(tokenizer, "start_token_id", None), getattr(tokenizer, "end_token_id", None)
    if start is None or end is None:
        raise HubTextError("the tokenizer names no start and end tokens, and no packer says how texts are joined")
    return [start], [end], [end]


def _template(tokenizer: Any, start: list[Any], separator: list[Any], end: list[Any]) -> processors.TemplateProcessing:
    """``start A end`` and ``start A separator B end``; segment 0 up to the separator, 1 after (as the packer)."""

    def token(value: Any) -> tuple[str, int]:
        if isinstance(value, str):
            return value, int(tokenizer.token_to_id(value))
        return str(tokenizer.id_to_token(int(value))), int(value)

    def pieces(values: list[Any], segment: int) -> list[str]:
        return [f"{token(v)[0]}:{segment}" for v in values]

    single = [*pieces(start, 0), "$A:0", *pieces(end, 0)]
    pair = [*pieces(start, 0), "$A:0", *pieces(separator, 0), "$B:1", *pieces(end, 1)]
    specials = sorted({token(v) for v in [*start, *separator, *end]}, key=lambda t: t[1])
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


def _word_piece(tokenizer: Any) -> Tokenizer:
    config = tokenizer.get_config()
    vocabulary = [str(token) for token in tokenizer.get_vocabulary()]
    built = Tokenizer(
        models.WordPiece(
            {t: i for i, t in enumerate(vocabulary)},
            unk_token=config.get("oov_token", "[UNK]"),
            continuing_subword_prefix=config.get("suffix_indicator", "##"),
            max_input_chars_per_word=100,
        )
    )
    steps: list[Any] = []
    split_cjk = config.get("split", True) and config.get("split_on_cjk", True)
    if config.get("strip_accents", False):
        steps += [normalizers.NFD(), normalizers.StripAccents()]
    if config.get("lowercase", False):
        steps += _case_fold()
    if steps:
        built.normalizer = normalizers.Sequence(steps)
    if config.get("split", True):
        splits = [pre_tokenizers.Split(Regex(WHITESPACE), behavior="removed")]
        kept = f"{PUNCTUATION}|{CJK}" if split_cjk else PUNCTUATION
        built.pre_tokenizer = pre_tokenizers.Sequence([*splits, pre_tokenizers.Split(Regex(kept), behavior="isolated")])
    built.decoder = decoders.WordPiece(prefix=config.get("suffix_indicator", "##"))
    if config.get("special_tokens_in_strings", False):
        built.add_special_tokens([AddedToken(t, normalized=False) for t in tokenizer.special_tokens])
    return built


def _byte_pair(tokenizer: Any) -> Tokenizer:
    vocabulary = tokenizer.get_vocabulary()
    vocab = {str(token): index for index, token in enumerate(vocabulary)}
    merges = [tuple(str(merge).split(" ", 1)) for merge in tokenizer.merges]
    built = Tokenizer(models.BPE(vocab, merges))
    prefix = bool(getattr(tokenizer, "add_prefix_space", False))
    built.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix, use_regex=True)
    built.decoder = decoders.ByteLevel()
    unsplittable = list(getattr(tokenizer, "unsplittable_tokens", None) or [])
    built.add_special_tokens([AddedToken(t, normalized=False) for t in unsplittable if t in vocab])
    return built


def _sentence_piece(tokenizer: Any) -> Tokenizer:
    proto = tokenizer.proto
    if not isinstance(proto, bytes):
        proto = bytes(tokenizer.get_config().get("proto") or b"") or _proto_bytes(tokenizer)
    built = spm_tokenizer(proto)
    # keras-hub appends tokens the protobuf lacks (DeBERTaV3's [MASK]) after its pieces.
    extra = [t for t in tokenizer.get_vocabulary()[built.get_vocab_size() :] if isinstance(t, str)]
    built.add_special_tokens([AddedToken(t, normalized=False) for t in extra])
    return built


def _proto_bytes(tokenizer: Any) -> bytes:
    serialized = getattr(tokenizer, "_sentence_piece", None)
    if serialized is None or not hasattr(serialized, "serialized_model_proto"):
        raise HubTextError("the SentencePiece tokenizer's model protobuf is not available")
    return bytes(serialized.serialized_model_proto())


def _case_fold() -> list[Any]:
    """keras-hub lower-cases with TF Text's ``case_fold_utf8`` (ICU's NFKC_Casefold): NFKC, lower case, and the
    characters whose folding differs from that (``ß`` → ``ss``, ignorable code points removed, ...), taken from TF
    Text itself, one code point at a time."""
    removed, replaced = _fold_differences()
    steps: list[Any] = [normalizers.Replace(char, folded) for char, folded in replaced]
    if removed:
        steps.append(normalizers.Replace(Regex("[" + "".join(_escape(c) for c in removed) + "]"), ""))
    return [*steps, normalizers.NFKC(), normalizers.Lowercase()]


@functools.cache
def _fold_differences() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Code points where NFKC_Casefold differs from NFKC + lower case: those it removes, and those it maps."""
    import tensorflow_text as tf_text  # keras-hub's own dependency; present wherever a keras-hub model loads

    chars = [chr(c) for c in FOLD_PLANES if not 0xD800 <= c <= 0xDFFF]
    folded = [f.decode("utf-8") for f in tf_text.case_fold_utf8(chars).numpy()]
    removed, replaced = [], []
    for char, fold in zip(chars, folded, strict=True):
        plain = unicodedata.normalize("NFKC", char).lower()
        if fold == plain:
            continue
        if not fold:
            removed.append(char)
        elif not any(c.isspace() for c in fold):  # a fold into spaces would split where keras-hub does not
            replaced.append((char, fold))
    return tuple(removed), tuple(replaced)


def _escape(char: str) -> str:
    return f"\\x{{{ord(char):X}}}"
