"""Which tokenizer an import serves, and the checks that it is the one the model was trained with.

In order: the model's own ``TextVectorization``; the user's ``--tokenizer`` or ``--vocab``; else the keras-hub
preprocessor that came with the model (a task saved with it, a preset) or ``--preprocessor``, rebuilt. Wherever a
keras-hub preprocessor is at hand, the served tokenizer must give its ids exactly (``text_parity``: the probe set
and ``--data``'s texts). Where none is, what can be checked is: a vocabulary with ``[CLS]``/``[SEP]`` (or
``<s>``/``</s>``) needs a tokenizer that adds them, and a WordPiece vocabulary must be the size of the model's token
embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model_export import hub, text
from model_export.loading import ImportFailure, Source
from model_export.text_parity import TokenizerMismatch, check_tokenizer

WITHOUT_PREPROCESSOR = "none"


def choose_text(source: Source, tokenizer: Path | None, vocab: Path | None, preprocessor: Path | None) -> text.Text:
    """The tokenizer for the folder (``text.Text``), its keras-hub preprocessor kept for the gate."""
    original = _preprocessor(source, preprocessor)
    if source.text_vectorization is not None:
        if tokenizer or vocab or preprocessor:
            raise ImportFailure(
                "the model tokenizes itself (TextVectorization): drop --tokenizer/--vocab/--preprocessor"
            )
        return text.from_text_vectorization(source.text_vectorization)
    if tokenizer is not None or vocab is not None:
        chosen = (
            text.from_tokenizer_file(tokenizer) if tokenizer is not None else text.from_vocab_file(Path(vocab or ""))
        )
        if original is None:
            return chosen
        rebuilt = text.from_hub(original)  # for its sequence length and truncation
        return text.with_preprocessor(chosen, original, rebuilt.sequence_length, rebuilt.truncation)
    if original is not None:
        return text.from_hub(original)
    raise ImportFailure(
        "the model takes token ids: say how text becomes ids with --tokenizer, --vocab or --preprocessor "
        "(a keras-hub task saved with its preprocessor needs none of them)"
    )


def check_text(chosen: text.Text, max_len: int, token_vocabulary: int | None, texts: Sequence[str]) -> dict[str, Any]:
    """Refuse a tokenizer that is not the model's; return what was checked, for ``model.json``."""
    if chosen.preprocessor is not None:
        served = chosen.served(max_len)
        try:
            report = check_tokenizer(chosen.preprocessor, served, texts)
        except TokenizerMismatch as exc:
            raise ImportFailure(str(exc)) from exc
        return {"checked_against": "keras_hub_preprocessor", "texts": report.texts, "pairs": report.pairs}
    if chosen.origin in ("tokenizer", "vocab"):
        try:
            text.check_specials(chosen)
        except text.TextError as exc:
            raise ImportFailure(str(exc)) from exc
    if chosen.word_piece_vocabulary and token_vocabulary is not None and chosen.vocab_size != token_vocabulary:
        raise ImportFailure(
            f"the WordPiece vocabulary has {chosen.vocab_size} tokens, the model's token embedding {token_vocabulary}: "
            "it is not the vocabulary the model was trained with"
        )
    return {"checked_against": WITHOUT_PREPROCESSOR}


def _preprocessor(source: Source, path: Path | None) -> Any:
    if path is None:
        return source.preprocessor
    try:
        return hub.load_preprocessor(path)
    except hub.HubError as exc:
        raise ImportFailure(f"--preprocessor {path}: {exc}") from exc
