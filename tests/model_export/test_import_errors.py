"""Bad input to ``import``: one clear line on stderr, exit status 2, and no version folder left behind."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import keras
import pytest
from keras import layers

from model_export.cli import main
from tests.conftest import ROOT
from tests.model_export.user_models import USER_LAYERS, user_layers

Run = Callable[..., str]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small models that are wrong for import in one way each, and a vocabulary for them."""
    root = tmp_path_factory.mktemp("bad")
    (root / "vocab.txt").write_text("[PAD]\n[UNK]\ngood\nbad\n", encoding="utf-8")
    custom = user_layers()
    keras.utils.set_random_seed(0)

    def save(name: str, head: Callable[[object], object], extra: Callable[[object], object] = lambda x: x) -> None:
        ids = keras.Input((None,), dtype="int32", name="ids")
        x = extra(layers.Embedding(20, 8, name="embedding")(ids))
        keras.Model(ids, head(x)).save(root / f"{name}.keras")

    pooled = layers.GlobalAveragePooling1D
    save("states", layers.Dense(4))  # [B, T, 4]: not a classifier
    save("sigmoid", lambda x: layers.Dense(1, activation="sigmoid")(pooled()(x)))
    save("two", lambda x: layers.Dense(2, activation="softmax")(layers.Dense(8, name="hidden")(pooled()(x))))
    save("logits", lambda x: layers.Dense(3)(pooled()(x)))
    save("noise", lambda x: layers.Dense(2, activation="softmax")(custom.Noise()(pooled()(x))))

    def heads(x: object) -> object:
        x = layers.MultiHeadAttention(2, 4, name="two_heads")(x, x)
        return layers.MultiHeadAttention(4, 2, name="four_heads")(x, x)

    save("heads", lambda x: layers.Dense(2, activation="softmax")(pooled()(x)), heads)
    return root


@pytest.fixture
def run(workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    """Import ``model`` with ``options``; assert exit 2, one error line, no folder; return that line."""
    repository = tmp_path / "repository"

    def run(model: str, *options: str) -> str:
        argv = ["import", str(workdir / model), "--repository", str(repository), "--name", "m", *options]
        assert main(argv) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, err
        assert lines[0].startswith("error: ")
        assert not repository.exists() or not any(repository.rglob("*")), list(repository.rglob("*"))
        return lines[0]

    return run


def vocab(workdir: Path) -> tuple[str, str]:
    return "--vocab", str(workdir / "vocab.txt")


def test_a_missing_model_file(run: Run) -> None:
    assert "absent.keras: no such file" in run("absent.keras", "--labels", "a,b")


def test_a_missing_model_fails_fast_in_a_real_process(workdir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "model_export", "import", str(workdir / "absent.keras"), "--labels", "a,b"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {workdir / 'absent.keras'}: no such file or folder (MODEL)"]


def test_a_model_that_is_not_a_classifier(run: Run, workdir: Path) -> None:
    line = run("states.keras", "--labels", "a,b", *vocab(workdir), "--max-len", "10")
    assert "not a classifier" in line
    assert "[batch, seq, 4]" in line
    assert "not a classifier" in run("sigmoid.keras", "--labels", "a,b", *vocab(workdir), "--max-len", "10")


def test_labels_that_do_not_match_the_output_width(run: Run, workdir: Path) -> None:
    line = run("two.keras", "--labels", "a,b,c", *vocab(workdir), "--max-len", "10")
    assert "--labels names 3 classes, but the model's output has 2 columns" in line


def test_a_vocabulary_without_unk(run: Run, workdir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.txt"
    bare.write_text("[PAD]\ngood\nbad\n")
    assert "no [UNK] token" in run("two.keras", "--labels", "a,b", "--vocab", str(bare), "--max-len", "10")


def test_an_attention_layer_that_does_not_exist(run: Run, workdir: Path) -> None:
    line = run("two.keras", "--labels", "a,b", *vocab(workdir), "--max-len", "10", "--attention-layer", "nope")
    assert "--attention-layer nope: the model has no layer of that name" in line


def test_an_attention_layer_whose_output_is_not_attention(run: Run, workdir: Path) -> None:
    line = run("two.keras", "--labels", "a,b", *vocab(workdir), "--max-len", "10", "--attention-layer", "hidden")
    assert "--attention-layer hidden: its output is not attention weights" in line


def test_logits_without_the_flag_and_the_flag_on_probabilities(run: Run, workdir: Path) -> None:
    line = run("logits.keras", "--labels", "a,b,c", *vocab(workdir), "--max-len", "10")
    assert "is not probabilities" in line
    assert "pass --logits" in line
    line = run("two.keras", "--labels", "a,b", *vocab(workdir), "--max-len", "10", "--logits")
    assert line.startswith("error: --logits given, but the output '")
    assert line.endswith("' already sums to 1")


def test_attention_layers_with_different_head_counts(run: Run, workdir: Path) -> None:
    line = run("heads.keras", "--labels", "a,b", *vocab(workdir), "--max-len", "10")
    assert "different head counts (two_heads: 2, four_heads: 4)" in line
    assert "--attention-layer" in line


def test_a_model_whose_export_fails_parity(run: Run, workdir: Path) -> None:
    line = run(
        "noise.keras", "--labels", "a,b", *vocab(workdir), "--max-len", "10", "--custom-objects", str(USER_LAYERS)
    )
    assert "ONNX and Keras disagree" in line


def test_a_model_without_a_length_limit_needs_max_len(run: Run, workdir: Path) -> None:
    assert "pass --max-len N" in run("two.keras", "--labels", "a,b", *vocab(workdir))


def test_a_custom_layer_without_its_custom_objects(run: Run, workdir: Path) -> None:
    # noise.keras's layer is registered in this process; a copy naming a class nobody registered is not
    with zipfile.ZipFile(workdir / "noise.keras") as source, zipfile.ZipFile(workdir / "unknown.keras", "w") as copy:
        for item in source.infolist():
            data = source.read(item)
            copy.writestr(
                item,
                data.replace(b"user_models>Noise", b"user_models>Unknown") if item.filename == "config.json" else data,
            )
    line = run("unknown.keras", "--labels", "a,b", *vocab(workdir), "--max-len", "10")
    assert "Keras cannot load it: 'Noise' is not registered; pass --custom-objects FILE.py" in line
