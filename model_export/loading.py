"""Load the model a user brings: a Keras 3 ``.keras`` file (custom layers registered first, keras-hub's classes
included), a keras-hub preset folder, or a SavedModel.

Either way the importer gets one small interface, ``Source``: which inputs are token ids, padding mask and segment
ids (found by their names, whatever the convention: keras-hub's ``token_ids`` / ``padding_mask`` / ``segment_ids``,
Hugging Face's ``input_ids`` / ``attention_mask`` / ``token_type_ids``, TF Hub's ``input_word_ids`` /
``input_mask`` / ``input_type_ids``), and ``call(ids, mask, segments)`` → the model's outputs as a flat list of
tensors (eager or inside a ``tf.function``). A Keras model can also be called *statelessly*, its weights passed in
as tensors (``variables``): that is how it is converted, so the weights reach ONNX once, as initializers, instead of
being frozen into constants that tf2onnx copies many times over (BERT-base: 20 GB of memory, 2 minutes).

A Keras model whose first layer is a ``TextVectorization`` is split there: the source is the model from that
layer's output on (ONNX cannot run the layer; the importer rebuilds its vocabulary as a tokenizer.json).
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

from model_export import hub

MASK_NAMES = ("mask",)
SEGMENT_NAMES = ("segment", "type_ids", "token_type")
ID_NAMES = ("token_ids", "input_ids", "word_ids", "ids", "tokens")


class ImportFailure(ValueError):
    """The model cannot be imported as asked; the message is the one line the command prints."""


@dataclass(frozen=True)
class Roles:
    """Positions of the token ids, padding mask and segment ids among the model's inputs (None: not taken)."""

    ids: int
    mask: int | None = None
    segments: int | None = None


@dataclass
class Source:
    """A loaded model as the importer sees it (``call`` is the model; the rest says how to feed it)."""

    kind: str
    output_names: list[str]
    roles: Roles
    fixed_length: int | None
    id_dtype: tf.DType
    keras_model: keras.Model | None = None
    text_vectorization: Any = None
    text_model: keras.Model | None = None  # the whole model, strings in, when its TextVectorization is split off
    preprocessor: Any = None  # a keras-hub task's own preprocessor (tokenizer + packer)
    _call: Any = field(default=None, repr=False)
    _keep: Any = field(default=None, repr=False)  # a SavedModel's loaded object: its variables live as long

    @property
    def has_mask(self) -> bool:
        return self.roles.mask is not None

    @property
    def has_segments(self) -> bool:
        return self.roles.segments is not None

    @property
    def variables(self) -> list[Any]:
        """The Keras model's variables in the order ``call(weights=...)`` takes them (none for a SavedModel)."""
        model = self.keras_model
        return [] if model is None else [*model.trainable_variables, *model.non_trainable_variables]

    def layers(self) -> list[keras.layers.Layer]:
        """Every layer of a Keras model, nested ones included (none for a SavedModel)."""
        if self.keras_model is None:
            return []
        return list(self.keras_model._flatten_layers(include_self=False))

    def call(
        self,
        ids: tf.Tensor,
        mask: tf.Tensor | None = None,
        segments: tf.Tensor | None = None,
        weights: Sequence[tf.Tensor] | None = None,
    ) -> list[tf.Tensor]:
        """The model's outputs (flattened) for ``ids``; a missing mask is all ones, missing segments all zeros.

        ``weights``: the values of ``variables``, to run the Keras model statelessly on them.
        """
        if self.has_mask and mask is None:
            mask = tf.ones_like(ids)
        if self.has_segments and segments is None:
            segments = tf.zeros_like(ids)
        return list(self._call(ids, mask, segments, weights))


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
    """The model at ``path``: a ``.keras`` file, a keras-hub preset folder or a SavedModel folder."""
    if not path.exists():
        raise ImportFailure(f"{path}: no such model file or folder")
    if path.is_dir():
        if hub.is_preset(path):
            return _keras(_hub_preset(path))
        if not (path / "saved_model.pb").is_file():
            raise ImportFailure(
                f"{path}: a folder, but neither a SavedModel (no saved_model.pb) nor a keras-hub preset"
            )
        return _saved_model(path)
    if path.suffix != ".keras":
        raise ImportFailure(f"{path}: expected a Keras 3 .keras file, a keras-hub preset or a SavedModel folder")
    if hub.mentions_hub(path):
        hub.require()  # its classes register with Keras when keras_hub is imported
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


def _hub_preset(path: Path) -> keras.Model:
    try:
        return hub.load_preset(path)
    except hub.HubError as exc:
        raise ImportFailure(f"{path}: {exc}") from exc


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
        return Source("keras", ["output_0"], Roles(0), None, tf.int32, model, None, None, None, _subclassed(model))
    roles = find_roles([_input_name(t) for t in inputs])
    names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])
    fixed = inputs[roles.ids].shape[1] if len(inputs[roles.ids].shape) == 2 else None
    id_dtype = tf.dtypes.as_dtype(inputs[roles.ids].dtype)
    call = _functional(model, roles, [t.dtype for t in inputs])
    return Source("keras", names, roles, fixed, id_dtype, model, layer, whole, hub.preprocessor_of(model), call)


def _functional(model: keras.Model, roles: Roles, dtypes: list[Any]) -> Any:
    structure = getattr(model, "_inputs_struct", None)
    trainable = len(model.trainable_variables)

    def call(ids: tf.Tensor, mask: Any, segments: Any, weights: Any) -> Sequence[tf.Tensor]:
        flat: list[Any] = [None] * len(dtypes)
        for index, value in ((roles.ids, ids), (roles.mask, mask), (roles.segments, segments)):
            if index is not None:
                flat[index] = tf.cast(value, dtypes[index])
        packed = keras.tree.pack_sequence_as(structure, flat) if structure is not None else flat
        packed = packed[0] if isinstance(packed, list) and len(packed) == 1 else packed
        if weights is None:
            return _flat(model(packed, training=False))
        outputs, _ = model.stateless_call(weights[:trainable], weights[trainable:], packed, training=False)
        return _flat(outputs)

    return call


def _subclassed(model: keras.Model) -> Any:
    trainable = len(model.trainable_variables)

    def call(ids: tf.Tensor, mask: Any, segments: Any, weights: Any) -> Sequence[tf.Tensor]:
        if weights is None:
            return _flat(model(ids))
        return _flat(model.stateless_call(weights[:trainable], weights[trainable:], ids)[0])

    return call


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
    roles = find_roles(names)
    keys = sorted(function.structured_outputs)

    def call(ids: tf.Tensor, mask: Any, segments: Any, weights: Any) -> Sequence[tf.Tensor]:
        feeds = {}
        for index, value in ((roles.ids, ids), (roles.mask, mask), (roles.segments, segments)):
            if index is not None:
                feeds[names[index]] = tf.cast(value, specs[names[index]].dtype)
        result = function(**feeds)
        return [result[key] for key in keys]

    ids_spec = specs[names[roles.ids]]
    fixed = ids_spec.shape[1] if ids_spec.shape.rank == 2 else None
    return Source("saved_model", keys, roles, fixed, ids_spec.dtype, None, None, None, None, call, loaded)


def find_roles(names: Sequence[str]) -> Roles:
    """Which input is the token ids, which the padding mask and which the segment ids, by their names.

    A mask is named like one (``padding_mask``, ``attention_mask``, ``input_mask``), segments like theirs
    (``segment_ids``, ``token_type_ids``, ``input_type_ids``); the ids are the one left, or the one named like
    ids. An input that plays none of these roles is refused by name.
    """
    if len(names) == 1:
        return Roles(0)
    lowered = [name.lower().rsplit(":", 1)[0] for name in names]
    masks = [i for i, name in enumerate(lowered) if any(key in name for key in MASK_NAMES)]
    segments = [i for i, name in enumerate(lowered) if any(key in name for key in SEGMENT_NAMES) and i not in masks]
    rest = [i for i in range(len(names)) if i not in masks and i not in segments]
    ids = rest if len(rest) == 1 else [i for i in rest if any(lowered[i].endswith(key) for key in ID_NAMES)]
    unknown = [names[i] for i in rest if i not in ids[:1]]
    if len(masks) > 1 or len(segments) > 1 or len(ids) != 1 or unknown:
        raise ImportFailure(
            f"the model has inputs {list(names)}: expected token ids, and optionally a padding mask ('...mask') and "
            f"segment ids ('segment_ids', 'token_type_ids', 'input_type_ids')"
            + (f"; {unknown} play(s) none of these roles" if unknown else "")
        )
    return Roles(ids[0], masks[0] if masks else None, segments[0] if segments else None)


def _input_name(tensor: Any) -> str:
    return str(getattr(tensor, "name", ""))


def _flat(outputs: Any) -> list[tf.Tensor]:
    return list(keras.tree.flatten(outputs))
