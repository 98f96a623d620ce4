"""One reader of the folder format: what the service refuses to load, ``verify`` refuses too, with the same reason."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from model_format.document import FormatError, load_tokenizer, read_document, read_spec
from service.model_folder import ModelFolderError, load_folder
from service.runtime import RuntimeOptions
from tests.conftest import ROOT
from tests.service.graphs import TinyGraph, write_folder


def rewritten(folder: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    document = json.loads((folder / "model.json").read_text())
    edit(document)
    (folder / "model.json").write_text(json.dumps(document))
    return folder


def claims_pairs(document: dict[str, Any]) -> None:
    document["signature"]["pairs"] = True


def names_a_machine_path(document: dict[str, Any]) -> None:
    document["files"]["tokenizer"] = "/etc/passwd"


def cls_without_maps(document: dict[str, Any]) -> None:
    document["signature"]["attention_source"] = "cls"
    document["signature"]["outputs"]["self_attention"] = None


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (claims_pairs, "the signature says the model takes text pairs, but tokenizer.json has no pair template"),
        (names_a_machine_path, "'/etc/passwd' is not a file name of the folder"),
        (cls_without_maps, "'cls' reads the self-attention maps, which are missing"),
    ],
)
def test_the_service_and_verify_refuse_alike(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], reason: str
) -> None:
    folder = rewritten(write_folder(tmp_path, TinyGraph(layout="BLHTT")), edit)
    with pytest.raises(ModelFolderError, match=re.escape(reason)):
        load_folder(folder, "tiny", 1, RuntimeOptions(intra_op_threads=1), "fp32", 2)
    command = [sys.executable, "-m", "model_export", "verify", str(folder)]
    verified = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
    assert verified.returncode == 2
    assert reason in verified.stderr


def test_the_reader_checks_the_tokenizer_against_the_model(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, TinyGraph(segments="types"))
    spec = read_spec(read_document(folder), "tiny", 1)
    assert load_tokenizer(folder, spec, "int64").pairs
    small = rewritten(folder, lambda d: d.update(vocab_size=10))
    with pytest.raises(FormatError, match="the tokenizer's vocabulary is larger than the model's"):
        load_tokenizer(small, read_spec(read_document(small), "tiny", 1), "int64")
