from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_export.artifact import ArtifactError, check_name, existing_versions, write_version


def test_versions_count_up_and_nothing_is_overwritten(tmp_path: Path) -> None:
    first = write_version(tmp_path, "m", {"model.onnx": b"one"}, {"labels": ["a", "b"]})
    second = write_version(tmp_path, "m", {"model.onnx": b"two"}, {"labels": ["a", "b"]})
    assert (first.name, second.name) == ("1", "2")
    assert (first / "model.onnx").read_bytes() == b"one"
    document = json.loads((second / "model.json").read_text())
    assert document["version"] == 2
    assert document["name"] == "m"
    assert len(document["sha256"]["model.onnx"]) == 64
    assert existing_versions(tmp_path / "m") == [1, 2]
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".")]


def test_next_version_follows_the_highest_existing_one(tmp_path: Path) -> None:
    (tmp_path / "m" / "7").mkdir(parents=True)
    (tmp_path / "m" / "7" / "keep").write_text("x")
    assert write_version(tmp_path, "m", {"a": b""}, {}).name == "8"


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 65, "sp ace"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ArtifactError):
        check_name(name)
