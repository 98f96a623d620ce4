"""The model version's own ``tokenizer.json``, loaded with Hugging Face ``tokenizers`` (Rust, batch calls)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


@dataclass(frozen=True)
class Encoded:
    """One text's token ids, token strings, the character span of each token, and whether the text was cut."""

    ids: np.ndarray
    tokens: list[str]
    offsets: list[tuple[int, int]]
    cut: bool = False


class TextTokenizer:
    """Tokenizes exactly as the model was trained: the file's normalizer, pre-tokenizer, model and post-processor.

    Special tokens that the file's post-processor adds (BERT's ``[CLS]`` … ``[SEP]``) are part of the ids, with an
    empty character span; a file without one (ours) adds none. Padding is the batcher's; truncation happens only
    when a request asks for it, through the file's own truncation, which keeps the special tokens.
    """

    def __init__(self, path: Path, id_dtype: np.dtype, max_length: int) -> None:
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._cutting = Tokenizer.from_file(str(path))
        self._cutting.no_padding()
        self._cutting.enable_truncation(max_length)
        self.id_dtype = id_dtype
        self.vocab_size: int = self._tokenizer.get_vocab_size()

    def encode(self, texts: Sequence[str], cut: bool = False) -> list[Encoded]:
        """Encode many texts in one call (the Rust tokenizer parallelises the batch); ``cut``: to the maximum,
        each result saying whether its text was longer."""
        tokenizer = self._cutting if cut else self._tokenizer
        # A batch call hands even one text to the Rust thread pool: a wake-up, costly under load.
        encodings = [tokenizer.encode(texts[0])] if len(texts) == 1 else tokenizer.encode_batch(list(texts))
        return [Encoded(np.asarray(e.ids, self.id_dtype), e.tokens, e.offsets, bool(e.overflowing)) for e in encodings]

    def tokens_of(self, ids: Sequence[int]) -> list[str]:
        return [self._tokenizer.id_to_token(int(i)) or "" for i in ids]
