"""A SentencePiece model (``.spm`` / ``spiece.model`` protobuf) as a Hugging Face tokenizer.

The protobuf is read field by field (only what the tokenizer needs): ``sentencepiece``'s own generated module needs
protobuf 7, and the serving stack's gRPC messages pin protobuf 6, so neither is imported. The conversion follows the
one Hugging Face uses for ALBERT, T5 and DeBERTa: the model's precompiled normalization rules, trailing spaces
stripped and runs of spaces collapsed (when the model removes extra whitespace), ``▁`` for spaces with one in front
(``add_dummy_prefix``), and a Unigram (scores) or BPE (merges from the pieces' order) model over the pieces.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM, BPE = 1, 2
SPACE = "▁"


class SpmError(ValueError):
    """The SentencePiece model cannot be read or has no Hugging Face equivalent."""


@dataclass
class SpmModel:
    """What a tokenizer needs from ``ModelProto``: pieces (text, score, type), model type, normalization."""

    pieces: list[tuple[str, float, int]] = field(default_factory=list)
    model_type: int = UNIGRAM
    byte_fallback: bool = False
    charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise SpmError("the SentencePiece model is truncated")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7


def _fields(data: bytes) -> list[tuple[int, Any]]:
    """The (field number, value) pairs of one protobuf message: ints, 4-byte floats and byte strings."""
    found: list[tuple[int, Any]] = []
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 1:
            value, at = data[at : at + 8], at + 8
        elif wire == 2:
            size, at = _varint(data, at)
            value, at = data[at : at + size], at + size
        elif wire == 5:
            value, at = struct.unpack("<f", data[at : at + 4])[0], at + 4
        else:
            raise SpmError(f"the SentencePiece model uses protobuf wire type {wire}, which it should not")
        found.append((number, value))
    return found


def read_model(proto: bytes) -> SpmModel:
    """Parse a serialized ``sentencepiece.ModelProto``."""
    model = SpmModel()
    for number, value in _fields(proto):
        if number == 1:  # SentencePiece: piece 1, score 2, type 3 (default NORMAL)
            piece = dict(_fields(value))
            model.pieces.append(
                (piece.get(1, b"").decode("utf-8"), float(piece.get(2, 0.0)), int(piece.get(3, NORMAL)))
            )
        elif number == 2:  # TrainerSpec: model_type 3, byte_fallback 35
            trainer = dict(_fields(value))
            model.model_type, model.byte_fallback = int(trainer.get(3, UNIGRAM)), bool(trainer.get(35, 0))
        elif number == 3:  # NormalizerSpec: precompiled_charsmap 2, add_dummy_prefix 3, remove_extra_whitespaces 4
            normalizer = dict(_fields(value))
            model.charsmap = bytes(normalizer.get(2, b""))
            model.add_dummy_prefix = bool(normalizer.get(3, 1))
            model.remove_extra_whitespaces = bool(normalizer.get(4, 1))
    if not model.pieces:
        raise SpmError("the SentencePiece model has no pieces")
    return model


def spm_tokenizer(proto: bytes) -> Tokenizer:
    """The Hugging Face tokenizer that segments text as the SentencePiece model does."""
    spm = read_model(proto)
    unknown = next((i for i, (_, _, kind) in enumerate(spm.pieces) if kind == UNKNOWN), None)
    if spm.model_type == UNIGRAM:
        vocab = [(piece, score) for piece, score, _ in spm.pieces]
        model = models.Unigram(vocab, unk_id=unknown, byte_fallback=spm.byte_fallback)
    elif spm.model_type == BPE:
        model = _bpe(spm, unknown)
    else:
        raise SpmError("only Unigram and BPE SentencePiece models have a Hugging Face equivalent")
    tokenizer = Tokenizer(model)
    steps: list[Any] = [normalizers.Precompiled(spm.charsmap)] if spm.charsmap else []
    if spm.remove_extra_whitespaces:
        steps += [normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), SPACE)]
    tokenizer.normalizer = normalizers.Sequence(steps)
    scheme = "always" if spm.add_dummy_prefix else "never"
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme=scheme)
    tokenizer.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme=scheme)
    # User-defined symbols are matched in the raw text, as SentencePiece matches them; control symbols never are.
    symbols = [AddedToken(piece, normalized=False) for piece, _, kind in spm.pieces if kind == USER_DEFINED]
    tokenizer.add_tokens(symbols)
    return tokenizer


def _bpe(spm: SpmModel, unknown: int | None) -> models.BPE:
    """SentencePiece BPE: merges in the order of the merged pieces' scores (Hugging Face's extractor)."""
    vocab = {piece: index for index, (piece, _, _) in enumerate(spm.pieces)}
    scores = {piece: score for piece, score, _ in spm.pieces}
    merges = []
    for piece in vocab:
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((scores[piece], vocab[left], vocab[right], (left, right)))
    merges.sort(key=lambda m: (-m[0], m[1], m[2]))
    unk = spm.pieces[unknown][0] if unknown is not None else None
    return models.BPE(vocab, [m[3] for m in merges], unk_token=unk, fuse_unk=True, byte_fallback=spm.byte_fallback)
