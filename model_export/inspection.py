"""Find what a user's model has: its prediction, its attention, its embeddings, by running it on probe ids.

Shapes alone cannot tell ``[batch, classes]`` from ``[batch, seq]``; running the model at two sequence lengths
can. Each output and each recorded layer call (see ``model_export.attention``) is classified from those runs:
probabilities (or logits), per-token pooling weights, attention maps ``[B, T, T]`` / ``[B, H, T, T]``, the
token and position embeddings. The result is a ``Plan`` the exported graph follows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from model_export import hub
from model_export.attention import Call, capturing, disturbing, is_stock_attention
from model_export.loading import ImportFailure, Source

PROBE_LENGTHS = (5, 9)
SUM_TOLERANCE = 1e-3
READ_TOLERANCE = 1e-6


@dataclass(frozen=True)
class MapRef:
    """Where one attention map comes from: model output ``output``, or output ``index`` of recorded call ``call``."""

    name: str
    heads: int
    output: int | None = None
    call: int | None = None
    index: int = 0
    layer: keras.layers.Layer | None = None  # the recorded call's layer, and which of its calls (0: the first)
    ordinal: int = 0


@dataclass(frozen=True)
class Plan:
    """What the exported graph takes from the model, and what the probes learned about it."""

    probabilities: int
    logits: bool
    pooling: int | None
    maps: tuple[MapRef, ...]
    captured: tuple[keras.layers.Layer, ...]
    token_vocabulary: int | None = None
    position_limit: int | None = None
    masks_zero: bool = False
    notes: tuple[str, ...] = field(default=())
    reads_first: bool = False  # the prediction reads only position 0 ([CLS], <s>) after the last attention

    @property
    def heads(self) -> int | None:
        return self.maps[0].heads if self.maps else None


@dataclass(frozen=True)
class Probe:
    length: int
    ids: np.ndarray
    outputs: list[np.ndarray]
    calls: list[Call]


def inspect_model(source: Source, labels: Sequence[str], logits: bool, named: Sequence[str], vocab_size: int) -> Plan:
    """Probe the model and decide every role; raise ``ImportFailure`` with the reason where one cannot be had."""
    layers = source.layers()
    chosen = [_find_layer(layers, name) for name in named]
    stock = [layer for layer in layers if is_stock_attention(layer)]
    embeddings = [layer for layer in layers if isinstance(layer, keras.layers.Embedding)]
    captured = tuple(dict.fromkeys([*(chosen or stock), *embeddings]))
    probes = [_probe(source, captured, length, vocab_size) for length in _lengths(source)]
    notes: list[str] = []
    logits = logits or hub.outputs_logits(source.keras_model)
    probabilities = _probabilities(source, probes, labels, logits)
    pooling = _pooling(source, probes, notes)
    maps = _named_maps(probes, chosen) if chosen else _output_maps(source, probes) or _stock_maps(probes, notes)
    _check_heads(maps)
    maps = _layer_names(maps)
    token, position, masks_zero = _embeddings(probes)
    position = hub.position_limit(layers) or position
    reads_first = pooling is None and _reads_first(source, probes, maps, probabilities)
    plan = Plan(probabilities, logits, pooling, tuple(maps), captured, token, position, masks_zero, tuple(notes))
    return dataclasses.replace(plan, reads_first=reads_first)


def _lengths(source: Source) -> tuple[int, ...]:
    return (source.fixed_length,) if source.fixed_length else PROBE_LENGTHS


def _probe(source: Source, captured: Sequence[keras.layers.Layer], length: int, vocab_size: int) -> Probe:
    ids = np.random.default_rng(length).integers(1, max(vocab_size, 2), size=(2, length)).astype(np.int32)
    mask = np.ones_like(ids)
    try:
        with capturing(captured) as calls:
            outputs = source.call(ids, mask)
    except Exception as exc:  # the model's own error: say where it happened
        raise ImportFailure(
            f"the model failed on 2 sequences of {length} token ids in [1, {vocab_size}): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}"
        ) from exc
    return Probe(length, ids, [np.asarray(o) for o in outputs], calls)


def _shape_kind(shapes: Sequence[tuple[int, ...]], lengths: Sequence[int]) -> str:
    """``classes`` ([B, C]), ``tokens`` ([B, T]), ``maps`` ([B, T, T] / [B, H, T, T]), or ``other``."""
    if all(len(s) == 2 and s[1] == t for s, t in zip(shapes, lengths, strict=True)):
        return "tokens"
    if all(len(s) == 2 for s in shapes) and len({s[1] for s in shapes}) == 1:
        return "classes"
    if all(len(s) in (3, 4) and s[-1] == s[-2] == t for s, t in zip(shapes, lengths, strict=True)):
        return "maps"
    return "other"


def _kinds(probes: Sequence[Probe]) -> list[str]:
    lengths = [p.length for p in probes]
    return [_shape_kind([p.outputs[i].shape for p in probes], lengths) for i in range(len(probes[0].outputs))]


def _describe(source: Source, probes: Sequence[Probe]) -> str:
    """The outputs and their shapes, with ``batch`` and ``seq`` where the probe's sizes are."""

    def shape(values: np.ndarray) -> str:
        dims = ["batch" if i == 0 else "seq" if d == probes[0].length else str(d) for i, d in enumerate(values.shape)]
        return f"[{', '.join(dims)}]"

    return ", ".join(f"{name} {shape(out)}" for name, out in zip(source.output_names, probes[0].outputs, strict=False))


def _probabilities(source: Source, probes: Sequence[Probe], labels: Sequence[str], logits: bool) -> int:
    kinds = _kinds(probes)
    candidates = [i for i, k in enumerate(kinds) if k == "classes" and probes[0].outputs[i].shape[1] >= 2]
    if len(candidates) > 1:
        candidates = [i for i in candidates if probes[0].outputs[i].shape[1] == len(labels)] or candidates
    if not candidates:
        raise ImportFailure(
            f"not a classifier: no output of shape [batch, classes >= 2] (outputs: {_describe(source, probes)})"
        )
    if len(candidates) > 1:
        raise ImportFailure(f"several outputs could be the prediction ({_describe(source, probes)}); keep one")
    index = candidates[0]
    width = probes[0].outputs[index].shape[1]
    if width != len(labels):
        raise ImportFailure(f"--labels names {len(labels)} classes, but the model's output has {width} columns")
    rows = np.concatenate([p.outputs[index] for p in probes]).astype(np.float64)
    sums_to_one = bool(np.all(np.abs(rows.sum(-1) - 1) < SUM_TOLERANCE) and rows.min() >= -1e-6)
    if not logits and not sums_to_one:
        raise ImportFailure(
            f"the model's output {source.output_names[index]!r} is not probabilities (rows sum to "
            f"{rows.sum(-1).min():.3g}..{rows.sum(-1).max():.3g}); if it gives logits, pass --logits"
        )
    if logits and sums_to_one:
        raise ImportFailure(f"--logits given, but the output {source.output_names[index]!r} already sums to 1")
    return index


def _is_weights(values: np.ndarray) -> bool:
    """Non-negative and summing to 1 over the last axis (attention weights on an unpadded probe)."""
    return bool(values.size and values.min() >= -1e-6 and np.all(np.abs(values.sum(-1) - 1) < SUM_TOLERANCE))


def _pooling(source: Source, probes: Sequence[Probe], notes: list[str]) -> int | None:
    found = None
    for i, kind in enumerate(_kinds(probes)):
        if kind != "tokens":
            continue
        if found is None and all(_is_weights(p.outputs[i]) for p in probes):
            found = i
        else:
            notes.append(f"output {source.output_names[i]!r} [batch, seq] left out (not pooling weights, or a second)")
    return found


def _output_maps(source: Source, probes: Sequence[Probe]) -> list[MapRef]:
    maps = []
    for i, kind in enumerate(_kinds(probes)):
        if kind == "maps" and all(_is_weights(p.outputs[i]) for p in probes):
            shape = probes[0].outputs[i].shape
            maps.append(MapRef(source.output_names[i], 1 if len(shape) == 3 else shape[1], output=i))
    return maps


def _call_maps(probes: Sequence[Probe], number: int) -> list[int]:
    """Which outputs of recorded call ``number`` are self-attention weights at every probe length."""
    outputs = probes[0].calls[number].outputs
    lengths = [p.length for p in probes]
    found = []
    for index in range(len(outputs)):
        shapes = [tuple(p.calls[number].outputs[index].shape) for p in probes]
        values = [np.asarray(p.calls[number].outputs[index]) for p in probes]
        if _shape_kind(shapes, lengths) == "maps" and all(_is_weights(v) for v in values):
            found.append(index)
    return found


def _named_maps(probes: Sequence[Probe], chosen: Sequence[keras.layers.Layer]) -> list[MapRef]:
    maps = []
    for layer in chosen:
        numbers = [n for n, call in enumerate(probes[0].calls) if call.layer is layer]
        shapes = [list(np.shape(out)) for n in numbers for out in probes[0].calls[n].outputs]
        for number in numbers:
            indices = _call_maps(probes, number)
            if not indices:
                raise ImportFailure(
                    f"--attention-layer {layer.name}: its output is not attention weights [batch, (heads,) seq, seq] "
                    f"summing to 1 (it gives {shapes})"
                )
            maps.append(_ref(probes, number, indices[0]))
        if not numbers:
            raise ImportFailure(f"--attention-layer {layer.name}: the layer never runs when the model predicts")
    return sorted(maps, key=lambda m: m.call or 0)


def _stock_maps(probes: Sequence[Probe], notes: list[str]) -> list[MapRef]:
    maps = []
    for number, call in enumerate(probes[0].calls):
        if not is_stock_attention(call.layer):
            continue
        if _call_maps(probes, number):
            maps.append(_ref(probes, number, 0))
        else:
            notes.append(f"layer {call.layer.name!r} left out: not self-attention over the tokens (cross-attention?)")
    return maps


def _ref(probes: Sequence[Probe], number: int, index: int) -> MapRef:
    call = probes[0].calls[number]
    shape = np.shape(call.outputs[index])
    earlier = sum(1 for c in probes[0].calls[:number] if c.layer is call.layer)
    name = call.layer.name if not earlier else f"{call.layer.name}#{earlier + 1}"
    heads = 1 if len(shape) == 3 else int(shape[1])
    return MapRef(name, heads, call=number, index=index, layer=call.layer, ordinal=earlier)


def _layer_names(maps: Sequence[MapRef]) -> list[MapRef]:
    """Where the layers' names repeat (keras-hub names every encoder's attention ``self_attention_layer``; ALBERT
    calls one shared layer again and again), each map is named by its index instead: ``layer 0``, ``layer 1``..."""
    names = [m.name.split("#", 1)[0] for m in maps]
    if len(set(names)) == len(names):
        return list(maps)
    return [dataclasses.replace(m, name=f"layer {index}") for index, m in enumerate(maps)]


def _reads_first(source: Source, probes: Sequence[Probe], maps: Sequence[MapRef], probabilities: int) -> bool:
    """Whether the prediction reads only the first position (``[CLS]``, ``<s>``) after the last attention layer:
    changing that layer's output everywhere else leaves it as it was."""
    last = maps[-1] if maps else None
    if last is None or last.layer is None:
        return False
    probe = probes[-1]
    mask = np.ones_like(probe.ids)
    with disturbing(last.layer, last.ordinal) as done:
        changed = np.asarray(source.call(probe.ids, mask)[probabilities])
    return done[0] and bool(np.max(np.abs(changed - probe.outputs[probabilities])) <= READ_TOLERANCE)


def _check_heads(maps: Sequence[MapRef]) -> None:
    heads = {m.name: m.heads for m in maps}
    if len(set(heads.values())) > 1:
        found = ", ".join(f"{name}: {count}" for name, count in heads.items())
        raise ImportFailure(
            f"the attention layers have different head counts ({found}); choose layers with one head count "
            "with --attention-layer NAME"
        )


def _embeddings(probes: Sequence[Probe]) -> tuple[int | None, int | None, bool]:
    """The token embedding's vocabulary, the position embedding's size, whether the token embedding masks 0."""
    token = position = None
    masks_zero = False
    for probe in probes:
        for call in probe.calls:
            if not isinstance(call.layer, keras.layers.Embedding):
                continue
            seen = np.asarray(call.inputs)
            if seen.shape == probe.ids.shape and np.array_equal(seen, probe.ids):
                token, masks_zero = int(call.layer.input_dim), bool(call.layer.mask_zero)
            elif (
                seen.ndim and seen.size and np.array_equal(seen.reshape(-1, seen.shape[-1])[0], np.arange(probe.length))
            ):
                position = int(call.layer.input_dim)
    return token, position, masks_zero


def _find_layer(layers: Sequence[keras.layers.Layer], name: str) -> keras.layers.Layer:
    for layer in layers:
        if layer.name == name:
            return layer
    known = ", ".join(layer.name for layer in layers[:12])
    raise ImportFailure(f"--attention-layer {name}: the model has no layer of that name (it has {known}, ...)")
