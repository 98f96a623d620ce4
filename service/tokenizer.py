"""The model version's own ``tokenizer.json``, loaded with Hugging Face ``tokenizers`` (Rust, batch calls)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


@dataclass(frozen=True)
class Encoded:
    """One text's token ids, token strings, and the character span of each token in the text."""

    ids: np.ndarray
    tokens: list[str]
    offsets: list[tuple[int, int]]


class TextTokenizer:
    """Tokenizes exactly as training did; padding and truncation are left to the caller."""

    def __init__(self, path: Path, id_dtype: np.dtype) -> None:
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.id_dtype = id_dtype
        self.vocab_size: int = self._tokenizer.get_vocab_size()

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        """Encode many texts in one call (the Rust tokenizer parallelises the batch)."""
        if len(texts) == 1:  # a batch call hands even one text to the Rust thread pool: a wake-up, costly under load
            encodings = [self._tokenizer.encode(texts[0], add_special_tokens=False)]
        else:
            encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [Encoded(np.asarray(e.ids, dtype=self.id_dtype), e.tokens, e.offsets) for e in encodings]

    def tokens_of(self, ids: Sequence[int]) -> list[str]:
        return [self._tokenizer.id_to_token(int(i)) or "" for i in ids]
