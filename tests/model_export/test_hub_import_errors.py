"""What a pretrained model's import refuses: one clear line, exit status 2, no version written."""

from __future__ import annotations

from pathlib import Path

import keras
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from model_export.cli import main
from tests.model_export.hub_models import HubModel, word_pieces

pytestmark = pytest.mark.export


def refused(capsys: pytest.CaptureFixture[str], repository: Path, model: Path, *options: str) -> str:
    argv = ["import", str(model), "--labels", "a,b,c", "--repository", str(repository), "--name", "m", *options]
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert not repository.exists() or not any(repository.rglob("*"))
    return lines[0]


def word_piece_file(path: Path, vocab: list[str], lowercase: bool, template: bool = False) -> Path:
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.save(str(path))
    return path


def test_an_input_that_plays_no_known_role_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    mask = keras.Input((None,), dtype="int32", name="padding_mask")
    extra = keras.Input((None,), dtype="int32", name="extra_features")
    x = keras.layers.Embedding(20, 4)(ids) + keras.layers.Embedding(5, 4)(extra)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling1D()(x))
    keras.Model({"token_ids": ids, "padding_mask": mask, "extra_features": extra}, out).save(tmp_path / "m.keras")
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\ngood\n")
    line = refused(capsys, tmp_path / "repository", tmp_path / "m.keras", "--vocab", str(tmp_path / "vocab.txt"))
    assert "['extra_features'] play(s) none of these roles" in line


def test_a_word_piece_vocabulary_of_another_size_than_the_embedding(
    hub_models: dict[str, HubModel], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vocab = tmp_path / "vocab.txt"
    tokens = word_pieces()
    vocab.write_text("\n".join(tokens[:-2]) + "\n", encoding="utf-8")  # a vocabulary two tokens short
    line = refused(capsys, tmp_path / "repository", hub_models["electra"].request.model, "--vocab", str(vocab))
    assert f"the WordPiece vocabulary has {len(tokens) - 2} tokens, the model's token embedding {len(tokens)}" in line


def test_a_tokenizer_that_fails_the_parity_gate_names_the_text(
    hub_models: dict[str, HubModel], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cased = word_piece_file(tmp_path / "tokenizer.json", word_pieces(), lowercase=False)
    line = refused(capsys, tmp_path / "repository", hub_models["bert"].request.model, "--tokenizer", str(cased))
    assert "tokenizer parity: the rebuilt tokenizer.json and keras-hub's preprocessor disagree on 'The service" in line


def test_a_tokenizer_without_the_models_special_tokens(
    hub_models: dict[str, HubModel], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = word_piece_file(tmp_path / "tokenizer.json", word_pieces(), lowercase=True)
    line = refused(capsys, tmp_path / "repository", hub_models["electra"].request.model, "--tokenizer", str(bare))
    assert "the vocabulary holds [CLS] and [SEP]" in line
    assert "adds no special tokens" in line


def test_a_backbone_preset_without_a_classifier(
    hub_models: dict[str, HubModel], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras_hub

    backbone = keras_hub.models.BertBackbone(50, 1, 2, 8, 16, max_sequence_length=16)
    backbone.save_to_preset(str(tmp_path / "backbone"))
    line = refused(capsys, tmp_path / "repository", tmp_path / "backbone")
    assert "a backbone alone has no classifier head" in line
