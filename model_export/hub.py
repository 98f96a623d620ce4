"""keras-hub, where a model comes from it: its preset folders, its tasks' preprocessors, its layers' facts.

keras-hub is optional (``pip install --no-deps keras-hub`` beside TensorFlow, see README): it is imported only when
a model needs it, and nothing here downloads — a preset is read from a local folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import zipfile
from pathlib import Path
from typing import Any

import keras

PRESET_FILES = ("config.json", "metadata.json")


class HubError(ValueError):
    """A keras-hub model or preset cannot be used as asked; the message says why."""


def require() -> Any:
    """The ``keras_hub`` module (its classes register with Keras on import)."""
    if importlib.util.find_spec("keras_hub") is None:
        raise HubError(
            "the model is a keras-hub model: install keras-hub in the exporter's environment "
            "(pip install --no-deps keras-hub, see README)"
        )
    return importlib.import_module("keras_hub")


def mentions_hub(path: Path) -> bool:
    """Whether a ``.keras`` file's configuration names keras-hub classes."""
    try:
        with zipfile.ZipFile(path) as archive:
            return b"keras_hub" in archive.read("config.json")
    except (OSError, KeyError, zipfile.BadZipFile):
        return False


def is_preset(path: Path) -> bool:
    """A folder written by keras-hub's ``save_to_preset``."""
    if not all((path / name).is_file() for name in PRESET_FILES):
        return False
    try:
        return "keras_hub_version" in json.loads((path / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def load_preset(path: Path) -> keras.Model:
    """The text classifier saved in a preset folder (its preprocessor with it, when it was saved)."""
    keras_hub = require()
    if not (path / "task.json").is_file():
        raise HubError("a keras-hub preset without a task (task.json): a backbone alone has no classifier head")
    try:
        model: keras.Model = keras_hub.models.TextClassifier.from_preset(str(path))
    except Exception as exc:  # keras-hub raises many types for a preset it cannot read
        raise HubError(f"keras-hub cannot load the preset: {type(exc).__name__}: {str(exc)[:300]}") from exc
    return model


def load_preprocessor(path: Path) -> Any:
    """A preprocessor (or a tokenizer alone) from a preset folder or a saved ``.keras`` task, for ``--preprocessor``."""
    require()
    if path.is_dir():
        for kind in ("preprocessor.json", "tokenizer.json"):
            if _hub_config(path / kind):
                return _saved_layer(path, kind)
        raise HubError(
            "the folder holds neither a keras-hub preprocessor nor a tokenizer (preprocessor.json, tokenizer.json)"
        )
    if path.suffix == ".keras":
        model = keras.saving.load_model(path, compile=False)
        found = preprocessor_of(model)
        if found is None:
            raise HubError("the .keras model has no preprocessor")
        return found
    raise HubError("expected a keras-hub preset folder or a .keras task saved with its preprocessor")


def _saved_layer(preset: Path, config_file: str) -> Any:
    """A preprocessor or tokenizer saved with ``save_to_preset`` (as keras-hub's own loader rebuilds one: its
    configuration, then its assets, the vocabulary); a tokenizer saved alone has no config.json beside it."""
    try:
        layer = keras.saving.deserialize_keras_object(json.loads((preset / config_file).read_text(encoding="utf-8")))
        for part in (layer, getattr(layer, "tokenizer", None)):
            if part is not None and hasattr(part, "load_preset_assets"):
                part.load_preset_assets(str(preset))
    except Exception as exc:  # keras-hub raises many types for a preset it cannot read
        raise HubError(
            f"keras-hub cannot load the preset's {config_file}: {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    return layer


def _hub_config(path: Path) -> bool:
    """A keras-hub object's configuration (not a Hugging Face tokenizer.json of the same name)."""
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("module", "")).startswith("keras_hub")
    except (OSError, ValueError, AttributeError):
        return False


def preprocessor_of(model: Any) -> Any:
    """A keras-hub task's preprocessor (tokenizer + packer), or None."""
    return getattr(model, "preprocessor", None) if _is_hub(model) else None


def outputs_logits(model: Any) -> bool:
    """Whether a keras-hub classifier task outputs logits (its ``activation`` is None or linear, the default)."""
    if model is None or not _is_hub(model) or not hasattr(model, "activation"):
        return False
    activation = model.activation
    return activation is None or getattr(activation, "__name__", "") == "linear"


def position_limit(layers: list[Any]) -> int | None:
    """The most positions a keras-hub backbone or position embedding layer holds (None: none found)."""
    limits = [
        getattr(layer, attribute)
        for layer in layers
        for suffix, attribute in (("Backbone", "max_sequence_length"), ("PositionEmbedding", "sequence_length"))
        if _is_hub(layer) and type(layer).__name__.endswith(suffix) and isinstance(getattr(layer, attribute, None), int)
    ]
    return min(limits) if limits else None


def _is_hub(value: Any) -> bool:
    return type(value).__module__.startswith("keras_hub.")
