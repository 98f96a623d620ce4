"""A WordPiece tokenizer trained on the training texts with Hugging Face ``tokenizers``.

Saved as ``tokenizer.json`` beside the model, it is what the service loads to tokenize exactly as training did
and to map every token back to its character span. Padding and truncation are left to the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN)
PAD_ID = 0


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a lower-casing WordPiece tokenizer; ``[PAD]`` gets id 0 and ``[UNK]`` id 1."""
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK_TOKEN, max_input_chars_per_word=64))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # The trainer numbers tokens in hash-map order, which changes from run to run: renumber canonically
    # (special tokens first, then the rest sorted) so the same vocabulary always gets the same ids.
    learned = sorted(set(tokenizer.get_vocab()) - set(SPECIAL_TOKENS))
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *learned])}
    tokenizer.model = models.WordPiece(vocab=vocab, unk_token=UNK_TOKEN, max_input_chars_per_word=64)
    return tokenizer


def load_tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def encode_batch(tokenizer: Tokenizer, texts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask, truncated to ``max_len`` and right-padded to the longest text."""
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    rows = [enc.ids[:max_len] or [tokenizer.token_to_id(UNK_TOKEN)] for enc in encodings]
    return pad_rows(rows, PAD_ID)


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """int32 ids right-padded with ``pad_id`` to ``width`` (or the longest row), and the mask (1 on real tokens)."""
    width = width or max(len(row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int32)
    mask = np.zeros((len(rows), width), dtype=np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask
