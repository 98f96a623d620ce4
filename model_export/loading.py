"""Load the model a user brings: a Keras 3 ``.keras`` file (custom layers registered first) or a SavedModel.

Either way the importer gets one small interface, ``Source``: which graph inputs are token ids and mask, and
``call(ids, mask)`` → the model's outputs as a flat list of tensors (eager or inside a ``tf.function``). A Keras
model whose first layer is a ``TextVectorization`` is split there: the source is the model from that layer's
output on (ONNX cannot run the layer; the importer rebuilds its vocabulary as a tokenizer.json).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf


class ImportFailure(ValueError):
    """The model cannot be imported as asked; the message is the one line the command prints."""


@dataclass
class Source:
    """A loaded model as the importer sees it (``call`` is the model; the rest says how to feed it)."""

    kind: str
    output_names: list[str]
    has_mask: bool
    fixed_length: int | None
    id_dtype: tf.DType
    keras_model: keras.Model | None = None
    text_vectorization: Any = None
    text_model: keras.Model | None = None  # the whole model, strings in, when its TextVectorization is split off
    _call: Any = field(default=None, repr=False)
    _keep: Any = field(default=None, repr=False)  # a SavedModel's loaded object: its variables live as long

    def call(self, ids: tf.Tensor, mask: tf.Tensor | None) -> list[tf.Tensor]:
        """The model's outputs (flattened) for int32 ``ids`` and, if it takes one, ``mask`` (all ones if None)."""
        if self.has_mask and mask is None:
            mask = tf.ones_like(ids)
        return list(self._call(ids, mask))

    def layers(self) -> list[keras.layers.Layer]:
        """Every layer of a Keras model, nested ones included (none for a SavedModel)."""
        if self.keras_model is None:
            return []
        return list(self.keras_model._flatten_layers(include_self=False))


def run_custom_objects(path: Path) -> None:
    """Execute the user's module so its ``register_keras_serializable`` classes exist before loading."""
    if not path.is_file():
        raise ImportFailure(f"{path}: no such custom-objects file")
    name = "attention_serve_custom_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportFailure(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ImportFailure(f"{path}: failed to run ({type(exc).__name__}: {exc})") from exc


def load_source(path: Path) -> Source:
    """The model at ``path``: a ``.keras`` file or a SavedModel folder."""
    if not path.exists():
        raise ImportFailure(f"{path}: no such model file or folder")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ImportFailure(f"{path}: a folder, but not a SavedModel (no saved_model.pb)")
        return _saved_model(path)
    if path.suffix != ".keras":
        raise ImportFailure(f"{path}: expected a Keras 3 .keras file or a SavedModel folder")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types; name the usual cause when it is the one
        missing = re.search(r"Could not locate (?:class|function) '([^']+)'", str(exc))
        if missing:
            raise ImportFailure(
                f"{path}: Keras cannot load it: {missing.group(1)!r} is not registered; pass --custom-objects "
                "FILE.py, the file that defines it with @keras.saving.register_keras_serializable"
            ) from exc
        raise ImportFailure(f"{path}: Keras cannot load it: {type(exc).__name__}: {str(exc)[:300]}") from exc
    return _keras(model)


def _keras(model: keras.Model) -> Source:
    inputs = list(getattr(model, "inputs", None) or [])
    vectorizers = [layer for layer in model.layers if isinstance(layer, keras.layers.TextVectorization)]
    layer, whole = None, None
    if inputs and len(inputs) == 1 and inputs[0].dtype == "string":
        if not vectorizers:
            raise ImportFailure("the model takes strings but has no TextVectorization layer to split off")
        layer, whole = vectorizers[0], model
        model = keras.Model(layer.output, model.outputs)
        inputs = list(model.inputs)
    elif vectorizers:
        raise ImportFailure(f"TextVectorization layer {vectorizers[0].name!r} is not the model's first layer")
    if not inputs:  # a subclassed model: one tensor of ids
        return Source("keras", ["output_0"], False, None, tf.int32, model, None, None, lambda i, m: _flat(model(i)))
    ids_index, mask_index = _roles([_input_name(t) for t in inputs])
    dtypes = [t.dtype for t in inputs]
    structure = getattr(model, "_inputs_struct", None)

    def call(ids: tf.Tensor, mask: tf.Tensor | None) -> Sequence[tf.Tensor]:
        flat: list[Any] = [None] * len(inputs)
        flat[ids_index] = tf.cast(ids, dtypes[ids_index])
        if mask_index is not None:
            flat[mask_index] = tf.cast(mask, dtypes[mask_index])
        packed = keras.tree.pack_sequence_as(structure, flat) if structure is not None else flat
        return _flat(model(packed[0] if isinstance(packed, list) and len(packed) == 1 else packed, training=False))

    names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])
    fixed = inputs[ids_index].shape[1] if len(inputs[ids_index].shape) == 2 else None
    id_dtype = tf.dtypes.as_dtype(dtypes[ids_index])
    return Source("keras", names, mask_index is not None, fixed, id_dtype, model, layer, whole, call)


def _saved_model(path: Path) -> Source:
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise ImportFailure(f"{path}: TensorFlow cannot load the SavedModel: {type(exc).__name__}") from exc
    if "serving_default" not in loaded.signatures:
        raise ImportFailure(f"{path}: the SavedModel has no serving_default signature ({list(loaded.signatures)})")
    function = loaded.signatures["serving_default"]
    specs = function.structured_input_signature[1]
    if any(spec.dtype == tf.string for spec in specs.values()):
        raise ImportFailure(
            f"{path}: the SavedModel takes strings; ONNX cannot run its text preprocessing. "
            "Import the .keras file instead (its TextVectorization layer is split off)"
        )
    names = list(specs)
    ids_index, mask_index = _roles(names)
    keys = sorted(function.structured_outputs)

    def call(ids: tf.Tensor, mask: tf.Tensor | None) -> Sequence[tf.Tensor]:
        feeds = {names[ids_index]: tf.cast(ids, specs[names[ids_index]].dtype)}
        if mask_index is not None:
            feeds[names[mask_index]] = tf.cast(mask, specs[names[mask_index]].dtype)
        result = function(**feeds)
        return [result[key] for key in keys]

    ids_spec = specs[names[ids_index]]
    fixed = ids_spec.shape[1] if ids_spec.shape.rank == 2 else None
    return Source("saved_model", keys, mask_index is not None, fixed, ids_spec.dtype, None, None, None, call, loaded)


def _roles(names: list[str]) -> tuple[int, int | None]:
    """Which input is the token ids and which (if any) the mask: the mask is the one named like one."""
    if len(names) == 1:
        return 0, None
    masks = [i for i, name in enumerate(names) if "mask" in name.lower()]
    if len(names) != 2 or len(masks) != 1:
        raise ImportFailure(
            f"the model has inputs {names}: expected token ids, and optionally a mask input with 'mask' in its name"
        )
    return 1 - masks[0], masks[0]


def _input_name(tensor: Any) -> str:
    return str(getattr(tensor, "name", ""))


def _flat(outputs: Any) -> list[tf.Tensor]:
    return list(keras.tree.flatten(outputs))
