"""The protocol-agnostic core: one ``InferenceRequest`` in, one ``InferenceResult`` out.

Every wire protocol decodes into an ``InferenceRequest`` and encodes the ``InferenceResult``; batching,
limits and validation happen here once, whatever protocol a request came by.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service import occlusion
from service.budget import MapChoice, Maps, check_budget, choose_maps
from service.errors import InvalidInput
from service.explain import attention_rollout
from service.repository import ModelRepository, ServedVersion
from service.sequences import Checked, Item, ItemLimits, TextPair, prepare

__all__ = ["InferenceRequest", "InferenceResult", "Prediction", "TextPair"]

ATTENTION = "attention"
SELF_ATTENTION = "self_attention"
ROLLOUT = "rollout"
OCCLUSION = "occlusion"
DEFAULT = "default"  # in a request's outputs: the version's default ones, besides any named
ALL = "all"  # in a request's outputs: every attention output the version has (occlusion, which costs, is asked alone)
OPTIONAL_OUTPUTS = frozenset({ATTENTION, SELF_ATTENTION, ROLLOUT, OCCLUSION})
ALL_MAPS = MapChoice()


@dataclass(frozen=True)
class Limits:
    max_instances: int
    max_text_chars: int
    default_timeout_s: float
    max_explanation_values: int = 4 << 20
    max_occlusion_tokens: int = 256


@dataclass(frozen=True)
class InferenceRequest:
    """A decoded request: each item a text, a text pair or a token-id sequence, and which outputs to compute.

    ``outputs``: None for the version's default (its per-token attention, if it has one); else names from
    ``OPTIONAL_OUTPUTS`` (each must exist for the version) and/or ``ALL``.
    """

    model: str
    version: int | None
    items: Sequence[Item]
    outputs: frozenset[str] | None = None
    truncate: bool = False
    timeout_s: float | None = None
    source: str = "instances"
    maps: MapChoice = ALL_MAPS
    occlusion: occlusion.OcclusionAsk = occlusion.WHOLE_TOKENS


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: np.ndarray
    length: int
    truncated: bool
    attention: np.ndarray | None = None
    self_attention: np.ndarray | None = None
    rollout: np.ndarray | None = None
    tokens: list[str] | None = None
    offsets: list[tuple[int, int]] | None = None
    sources: np.ndarray | None = None  # which text each token came from, for a model that reads pairs
    occlusion: np.ndarray | None = None  # each token's effect on the target class's probability


@dataclass(frozen=True)
class InferenceResult:
    model: str
    version: int
    labels: tuple[str, ...]
    predictions: list[Prediction]


@dataclass(frozen=True)
class Tensor:
    """A tensor of the public API (not of the graph): name, dtype (string, int32/64, float32), shape (-1 dynamic)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelDescription:
    name: str
    version: int
    labels: tuple[str, ...]
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    facts: dict[str, object]


def available_outputs(served: ServedVersion) -> frozenset[str]:
    """The explanation outputs this version can give (rollout wherever self-attention exists; occlusion always)."""
    signature = served.folder.spec.signature
    found = {ATTENTION, OCCLUSION} if signature.has(ATTENTION) else {OCCLUSION}
    if signature.has(SELF_ATTENTION):
        found |= {SELF_ATTENTION, ROLLOUT}
    return frozenset(found)


def resolve_outputs(requested: frozenset[str] | None, served: ServedVersion) -> frozenset[str]:
    """What a request gets: the default, or exactly what it named (a 400 for what this version lacks)."""
    available = available_outputs(served)
    if requested is None:
        return available & {ATTENTION}
    if DEFAULT in requested:
        requested = (requested - {DEFAULT}) | (available & {ATTENTION})
    missing = requested - available - {ALL}
    if missing:
        spec = served.folder.spec
        raise InvalidInput(
            f"model '{spec.name}' version {spec.version} has no {', '.join(sorted(missing))} output; "
            f"its attention outputs: {sorted(available - {OCCLUSION}) or 'none'}"
        )
    return (requested - {ALL}) | (available - {OCCLUSION} if ALL in requested else frozenset())


def describe(served: ServedVersion) -> ModelDescription:
    """The public inputs and outputs of a version, and facts about it, for every protocol's metadata."""
    spec, model = served.folder.spec, served.folder.model
    ids, signature = model.id_dtype.name, spec.signature
    inputs = [Tensor("text", "string", (-1,))]
    inputs += [Tensor("text_pair", "string", (-1,))] if signature.pairs else []
    inputs += [Tensor("input_ids", ids, (-1, -1))]
    inputs += [Tensor("attention_mask", ids, (-1, -1))]  # right padding of the request, whatever the graph takes
    outputs = [Tensor("label", "string", (-1,)), Tensor("probabilities", "float32", (-1, len(spec.labels)))]
    if signature.has(ATTENTION):
        outputs.append(Tensor(ATTENTION, "float32", (-1, -1)))
    outputs += [
        Tensor("lengths", "int32", (-1,)),
        Tensor("tokens", "string", (-1, -1)),
        Tensor("offsets", "int32", (-1, -1, 3 if signature.pairs else 2)),
    ]
    outputs.append(Tensor(OCCLUSION, "float32", (-1, -1)))
    layers_heads = spec.layers_heads
    if layers_heads is not None:
        outputs += [
            Tensor(SELF_ATTENTION, "float32", (-1, *layers_heads, -1, -1)),
            Tensor(ROLLOUT, "float32", (-1, -1)),
        ]
    return ModelDescription(spec.name, spec.version, spec.labels, tuple(inputs), tuple(outputs), _facts(served))


def _facts(served: ServedVersion) -> dict[str, object]:
    spec, model, document = served.folder.spec, served.folder.model, served.folder.spec.document
    return {
        "labels": list(spec.labels),
        "max_sequence_length": spec.max_length,
        "vocab_size": spec.vocab_size,
        "variant": spec.variant,
        "providers": list(model.providers),
        "graphs": {"lean": model.lean is not None, "intra_op_threads": model.threads},
        "loaded_at": served.loaded_at,
        "signature": spec.signature.describe(),
        "attention_outputs": sorted(available_outputs(served) - {OCCLUSION}),
        "occlusion": occlusion_method(served).describe(),
        **{
            key: document[key]
            for key in ("task", "metrics", "baseline", "parity", "created", "data", "source")
            if key in document
        },
    }


class DataPlane:
    def __init__(self, repository: ModelRepository, limits: Limits) -> None:
        self.repository, self.limits = repository, limits
        self._item_limits = ItemLimits(limits.max_instances, limits.max_text_chars)
        self.active = 0  # requests between decoding and their answer, all protocols (one event loop: no lock)

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        deadline = time.monotonic() + (request.timeout_s or self.limits.default_timeout_s)  # from arrival on
        served = self.repository.get(request.model, request.version)
        outputs = resolve_outputs(request.outputs, served)
        # Everything the request itself gets wrong is a 400 before the capacity check: a 503 says "retry", and
        # only waiting may cure it.
        sequences = prepare(request.items, request.source, request.truncate, served.folder, self._item_limits)
        maps = _maps(request, outputs, served)
        check_budget(outputs, [len(s.ids) for s in sequences], maps, self.limits.max_explanation_values)
        spec = served.folder.spec
        target = occlusion.target_class(request.occlusion.target, spec.labels) if OCCLUSION in outputs else None
        variants = self._variants(request, sequences, served) if OCCLUSION in outputs else []
        served.batcher.check_room(len(sequences) + len(variants))
        explain = bool(outputs & {SELF_ATTENTION, ROLLOUT})
        rows, occluded = await self._run(served, sequences, variants, explain, deadline)
        shape = _Shape(spec.labels, spec.signature.attention_source, spec.signature.pairs, maps)

        def derive() -> list[Prediction]:
            return [_predict(shape, s, row, outputs) for s, row in zip(sequences, rows, strict=True)]

        # With maps, rollout multiplies a T × T matrix per layer (0.17 s at 512 tokens on BERT-base, idle, 2 cores):
        # in a thread, so the loop keeps answering health and other requests meanwhile.
        predictions = await asyncio.to_thread(derive) if explain else derive()
        if variants:
            predictions = _with_occlusion(predictions, variants, occluded, target)
        return InferenceResult(spec.name, spec.version, spec.labels, predictions)

    def _variants(
        self, request: InferenceRequest, sequences: list[Checked], served: ServedVersion
    ) -> list[occlusion.Variant]:
        folder = served.folder
        method = occlusion_method(served)
        limits = (self.limits.max_occlusion_tokens, self.limits.max_instances)
        return occlusion.plan(
            sequences, request.occlusion, method, folder.tokenizer.special_ids, limits, request.source
        )

    async def _run(
        self,
        served: ServedVersion,
        sequences: list[Checked],
        variants: list[occlusion.Variant],
        explain: bool,
        deadline: float,
    ) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
        """Each sequence's row and each variant's (queued as bulk work, after ordinary requests)."""
        batcher, takes_segments = served.batcher, served.folder.spec.signature.segments is not None
        segments = [s.segments for s in sequences] if takes_segments else None
        futures = batcher.submit([s.ids for s in sequences], explain, deadline, self.active == 0, segments)
        if variants:
            occluded = [v.segments for v in variants] if takes_segments else None
            futures += batcher.submit([v.ids for v in variants], False, deadline, False, occluded, bulk=True)
        self.active += 1
        try:
            rows = [await futures[0]] if len(futures) == 1 else await asyncio.gather(*futures)
        except BaseException:
            for future in futures:
                future.cancel()  # drop this request's other sequences from the queue
            raise
        finally:
            self.active -= 1
        return rows[: len(sequences)], rows[len(sequences) :]


def occlusion_method(served: ServedVersion) -> occlusion.Method:
    """How this version's tokens are occluded: removed, or replaced where its graph takes a fixed length."""
    tokenizer = served.folder.tokenizer
    replacements = {token: tokenizer.token_id(token) for token in occlusion.MASK_TOKENS}
    return occlusion.method_for(served.folder.spec.signature.fixed_length, replacements)


def _with_occlusion(
    predictions: list[Prediction],
    variants: list[occlusion.Variant],
    rows: list[dict[str, np.ndarray]],
    target: int | None,
) -> list[Prediction]:
    found = []
    for index, prediction in enumerate(predictions):
        mine = [(v, row["probabilities"]) for v, row in zip(variants, rows, strict=True) if v.sequence == index]
        cls = target if target is not None else int(np.argmax(prediction.probabilities))
        values = occlusion.attributions(
            prediction.length, [v for v, _ in mine], prediction.probabilities, [p for _, p in mine], cls
        )
        found.append(dataclasses.replace(prediction, occlusion=values))
    return found


@dataclass(frozen=True)
class _Shape:
    """What a version's predictions look like: its labels, where its per-token attention comes from, pairs."""

    labels: tuple[str, ...]
    source: str | None
    pairs: bool
    maps: Maps | None


def _maps(request: InferenceRequest, outputs: frozenset[str], served: ServedVersion) -> Maps | None:
    """The layers and heads of ``self_attention`` the request gets (all unless it chose), checked."""
    if request.maps.chosen and SELF_ATTENTION not in outputs:
        raise InvalidInput("parameters.layers/heads choose self_attention maps: ask for self_attention too")
    return choose_maps(request.maps, served.folder.spec.layers_heads, "parameters")


def _readout(source: str | None, attention: np.ndarray | None, length: int) -> np.ndarray:
    """Where rollout is read out: the model's pooling weights; the position a [CLS]-reading classifier reads;
    else evenly over the tokens (a model whose per-token attention is what the last layer received)."""
    if source == "pooling" and attention is not None:
        return attention
    if source == "cls":
        first = np.zeros(length, np.float32)
        first[0] = 1.0
        return first
    return np.full(length, 1.0 / length, np.float32)


def _predict(shape: _Shape, seq: Checked, row: dict[str, np.ndarray], outputs: frozenset[str]) -> Prediction:
    """Trim one row of the batch to its own length and derive what was asked for."""
    length = len(seq.ids)
    probabilities = row["probabilities"]
    attention = row["attention"][:length] if ATTENTION in row else None
    self_attention = row["self_attention"][:, :, :length, :length] if SELF_ATTENTION in row else None
    rollout = None
    if ROLLOUT in outputs and self_attention is not None:
        rollout = attention_rollout(self_attention, _readout(shape.source, attention, length))
    if self_attention is not None and shape.maps is not None and SELF_ATTENTION in outputs:
        self_attention = shape.maps.cut(self_attention)
    labels = shape.labels
    return Prediction(
        label=labels[int(np.argmax(probabilities))],
        probabilities=probabilities,
        length=length,
        truncated=seq.truncated,
        attention=attention if ATTENTION in outputs else None,
        self_attention=self_attention if SELF_ATTENTION in outputs else None,
        rollout=rollout,
        tokens=seq.tokens,
        offsets=seq.offsets,
        sources=seq.sources if shape.pairs and seq.tokens is not None else None,
    )
