"""Writing the model folder ``<repository>/<name>/<version>/`` (its format: ``model_format``, shared with the service).

A version folder holds ``model.onnx``, ``tokenizer.json``, ``model.json`` and any optimized variants. It is
written under a hidden temporary name and renamed into place, so a polling server never sees half a model,
and an existing version is never overwritten: exporting to a taken name creates the next version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from model_format import document
from model_format.document import FORMAT_VERSION, METADATA_FILE, sha256_of

MODEL_FILE, TOKENIZER_FILE = document.MODEL_FILE, document.TOKENIZER_FILE  # the file names the format fixes
LEAN_FILE = document.LEAN_FILE

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ArtifactError(RuntimeError):
    """The model folder cannot be written or read; the message says which path and why."""


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name) or name.startswith("."):
        raise ArtifactError(f"invalid model name {name!r}: use letters, digits, '_', '-', '.' (at most 64)")
    return name


def existing_versions(model_dir: Path) -> list[int]:
    """Version numbers present under a model folder (folders named by positive integers only)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)


def write_version(repository: Path, name: str, files: dict[str, bytes], metadata: dict[str, Any]) -> Path:
    """Write ``files`` and ``model.json`` (with name, version and SHA-256s filled in) as the next version."""
    model_dir = repository / check_name(name)
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=model_dir))
        staging.chmod(0o755)  # mkdtemp makes it private; a server running as another user must read it
    except OSError as exc:
        raise ArtifactError(f"cannot write to {model_dir}: {exc.strerror}") from exc
    try:
        for filename, data in files.items():
            (staging / filename).write_bytes(data)
        return _publish(model_dir, staging, name, metadata)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(model_dir: Path, staging: Path, name: str, metadata: dict[str, Any]) -> Path:
    """Rename the staging folder to the next free version; retry if another exporter took it first."""
    hashes = {p.name: sha256_of(p) for p in sorted(staging.iterdir())}
    for _attempt in range(100):
        version = (existing_versions(model_dir) or [0])[-1] + 1
        document = {**metadata, "format": FORMAT_VERSION, "name": name, "version": version, "sha256": hashes}
        (staging / METADATA_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        target = model_dir / str(version)
        try:
            os.rename(staging, target)  # atomic; fails if the version exists, so nothing is overwritten
        except OSError:
            continue
        return target
    raise ArtifactError(f"could not claim a new version under {model_dir}")


def read_metadata(version_dir: Path) -> dict[str, Any]:
    path = version_dir / METADATA_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: missing") from exc
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(document, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    return document
