"""The exporter's command line: clear errors, verification and listing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_export.cli import main
from tests.conftest import BUNDLED, BUNDLED_REPOSITORY, ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "model_export", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_missing_dataset_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(tmp_path / "absent.csv"), "--repository", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_missing_columns_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.csv"
    data.write_text("body,sentiment\nhello,pos\n")
    assert main(["train", "--data", str(data), "--repository", str(tmp_path / "out")]) == 2
    assert "no column 'text'" in capsys.readouterr().err


def test_single_class_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n')
    assert main(["train", "--data", str(data), "--repository", str(tmp_path / "out")]) == 2
    assert "single class" in capsys.readouterr().err


def test_malformed_jsonl_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n{broken\n')
    assert main(["train", "--data", str(data), "--repository", str(tmp_path / "out")]) == 2
    assert "data.jsonl:2: not valid JSON" in capsys.readouterr().err


def test_repository_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["train", "--needle", "50", "--repository", str(blocker / "repo")]) == 2
    assert "not a writable folder" in capsys.readouterr().err


def test_verify_and_list_the_bundled_model() -> None:
    verified = run_cli("verify", str(BUNDLED))
    assert verified.returncode == 0, verified.stderr
    assert '"labels"' in verified.stdout
    listed = run_cli("list", "--repository", str(BUNDLED_REPOSITORY))
    assert listed.returncode == 0
    assert "sentiment/1" in listed.stdout


def test_verify_catches_a_tampered_model(tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "m" / "1"
    shutil.copytree(BUNDLED, copy)
    (copy / "model.onnx").write_bytes((copy / "model.onnx").read_bytes()[:-10])
    result = run_cli("verify", str(copy))
    assert result.returncode == 2
    assert "model.onnx does not match the SHA-256 in model.json" in result.stderr
