"""The model signature: which graph tensor plays which role, read and written in this one place.

Like Triton's model configuration, it is the contract every room reads: the exporter writes it, ``verify`` checks
it, the service's runtime feeds and fetches tensors by it, the batcher asks it how to pad, the data plane which
outputs exist, the protocols what to describe. The format is documented in docs/MODEL_FOLDER.md. A folder written
before signatures existed has none: it reads as the fixed names of that time (``input_ids`` + ``attention_mask`` →
``probabilities``, ``attention``, and ``self_attention`` when the graph has it).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Role = Literal["probabilities", "attention", "self_attention"]
Padding = Literal["mask", "pad_id", "none"]
Source = Literal["pooling", "received", "cls"]
Layout = Literal["BLHTT", "BHTT", "BTT"]
PROBABILITIES, ATTENTION, SELF_ATTENTION = "probabilities", "attention", "self_attention"
ROLES: tuple[Role, ...] = get_args(Role)
SOURCES: tuple[Source, ...] = get_args(Source)
PADDINGS: tuple[Padding, ...] = get_args(Padding)
ID_DTYPES = ("int32", "int64")
LAYOUT_RANKS = {"BLHTT": 5, "BHTT": 4, "BTT": 3}
INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS = "input_ids", "attention_mask", "token_type_ids"


class SignatureError(ValueError):
    """``model.json``'s signature is malformed or does not fit the graph; the message says which field."""


@dataclass(frozen=True)
class Signature:
    """Roles → graph tensor names, and how sequences may be padded. ``None``: the model has no such tensor.

    ``segments``: the graph input of segment (token-type) ids, padded with 0 like the mask. ``pairs``: the
    tokenizer joins two texts into one sequence (a pair classifier's ``text`` + ``text_pair``).
    ``attention_source`` ``"cls"``: the per-token attention is the last layer's row of position 0, the position
    the classifier reads, averaged over the heads; rollout is read out from that position too.
    """

    token_ids: str
    mask: str | None
    outputs: Mapping[str, str]  # role → graph name, only the roles the model has
    attention_source: Source | None = None
    self_attention_layout: Layout = "BLHTT"
    attention_layers: tuple[str, ...] = ()
    pad_id: int = 0
    padding: Padding = "mask"
    fixed_length: int | None = None
    text: Mapping[str, Any] = field(default_factory=dict)
    segments: str | None = None
    pairs: bool = False

    @property
    def input_names(self) -> list[str]:
        """The graph's inputs in the order the exporter writes them: ids, mask, segments."""
        return [self.token_ids, *(name for name in (self.mask, self.segments) if name)]

    @property
    def paddable(self) -> bool:
        """Whether sequences of different lengths may share a call (padding changes no answer)."""
        return self.padding != "none" or self.fixed_length is not None

    @property
    def text_origin(self) -> str:
        return str(self.text.get("origin", "tokenizer"))

    def has(self, role: str) -> bool:
        return role in self.outputs

    def name(self, role: str) -> str | None:
        return self.outputs.get(role)

    def to_json(self) -> dict[str, Any]:
        """The ``signature`` object of ``model.json``."""
        return {
            "inputs": {"token_ids": self.token_ids, "mask": self.mask, "segments": self.segments},
            "outputs": {role: self.outputs.get(role) for role in ROLES},
            "attention_source": self.attention_source,
            "self_attention_layout": self.self_attention_layout,
            "attention_layers": list(self.attention_layers),
            "pad_id": self.pad_id,
            "padding": self.padding,
            "fixed_length": self.fixed_length,
            "pairs": self.pairs,
            "text": dict(self.text),
        }

    def describe(self) -> dict[str, Any]:
        """The signature as the protocols' metadata shows it (roles and graph names, padding, attention)."""
        described = self.to_json()
        described["self_attention_layout"] = self.self_attention_layout if self.has(SELF_ATTENTION) else None
        described["text"] = self.text_origin
        return described


def standard_signature(
    *,
    mask: bool,
    attention_source: Source | None,
    self_attention: bool,
    attention_layers: tuple[str, ...] = (),
    pad_id: int = 0,
    padding: Padding = "mask",
    fixed_length: int | None = None,
    text: Mapping[str, Any] | None = None,
    segments: bool = False,
    pairs: bool = False,
) -> Signature:
    """A signature with the graph names the exporter always writes (``input_ids``, ``probabilities``, ...)."""
    if (padding == "mask") != mask:
        raise SignatureError(f"padding {padding!r} does not fit a graph {'with' if mask else 'without'} a mask input")
    outputs = {PROBABILITIES: PROBABILITIES}
    if attention_source is not None:
        outputs[ATTENTION] = ATTENTION
    if self_attention:
        outputs[SELF_ATTENTION] = SELF_ATTENTION
    signature = Signature(
        token_ids=INPUT_IDS,
        mask=ATTENTION_MASK if mask else None,
        outputs=outputs,
        attention_source=attention_source,
        attention_layers=attention_layers,
        pad_id=pad_id,
        padding=padding,
        fixed_length=fixed_length,
        text=dict(text or {"origin": "tokenizer"}),
        segments=TOKEN_TYPE_IDS if segments else None,
        pairs=pairs,
    )
    _check_consistent(signature)
    return signature


def trained_signature(attention_layers: tuple[str, ...], pad_id: int) -> Signature:
    """What ``train`` exports: ids and mask in; probabilities, pooling attention and every block's maps out."""
    return standard_signature(
        mask=True,
        attention_source="pooling",
        self_attention=True,
        attention_layers=attention_layers,
        pad_id=pad_id,
        text={"origin": "trained"},
    )


def read_signature(document: Mapping[str, Any], graph_outputs: Collection[str] = ()) -> Signature:
    """The signature of ``model.json`` (``document``), or the legacy one when it has none."""
    raw = document.get("signature")
    if raw is None:
        return legacy_signature(graph_outputs, _integer(document, "pad_token_id", 0, minimum=0))
    if not isinstance(raw, dict):
        raise SignatureError("signature: expected an object")
    inputs, outputs = _section(raw, "inputs"), _section(raw, "outputs")
    named = {role: _name(outputs, role, f"signature.outputs.{role}") for role in ROLES}
    present: dict[str, str] = {role: name for role, name in named.items() if name is not None}
    if PROBABILITIES not in present:
        raise SignatureError("signature.outputs.probabilities: every model needs a probabilities output")
    token_ids = _name(inputs, "token_ids", "signature.inputs.token_ids")
    if token_ids is None:
        raise SignatureError("signature.inputs.token_ids: every model needs a token-id input")
    signature = Signature(
        token_ids=token_ids,
        mask=_name(inputs, "mask", "signature.inputs.mask"),
        outputs=present,
        attention_source=_choice(raw, "attention_source", SOURCES, None),
        self_attention_layout=_choice(raw, "self_attention_layout", tuple(LAYOUT_RANKS), "BLHTT") or "BLHTT",
        attention_layers=_names(raw.get("attention_layers", [])),
        pad_id=_integer(raw, "pad_id", 0, minimum=0),
        padding=_choice(raw, "padding", PADDINGS, "mask") or "mask",
        fixed_length=_optional_integer(raw, "fixed_length"),
        text=_section(raw, "text"),
        segments=_name(inputs, "segments", "signature.inputs.segments"),
        pairs=_flag(raw, "pairs"),
    )
    _check_consistent(signature)
    return signature


def legacy_signature(graph_outputs: Collection[str], pad_id: int = 0) -> Signature:
    """The fixed names of folders written before signatures existed."""
    present: dict[str, str] = {PROBABILITIES: PROBABILITIES, ATTENTION: ATTENTION}
    if SELF_ATTENTION in graph_outputs:
        present[SELF_ATTENTION] = SELF_ATTENTION
    return Signature(
        token_ids=INPUT_IDS,
        mask=ATTENTION_MASK,
        outputs=present,
        attention_source="pooling",
        pad_id=pad_id,
        text={"origin": "trained"},
    )


def _check_consistent(signature: Signature) -> None:
    if signature.padding == "mask" and signature.mask is None:
        raise SignatureError("signature.padding: 'mask' needs a mask input (signature.inputs.mask)")
    if signature.padding != "mask" and signature.mask is not None:
        raise SignatureError(f"signature.padding: '{signature.padding}' means no mask input, but one is named")
    if signature.has(ATTENTION) != (signature.attention_source is not None):
        raise SignatureError("signature.attention_source: give it exactly when there is an attention output")
    if signature.attention_source == "cls" and not signature.has(SELF_ATTENTION):
        raise SignatureError("signature.attention_source: 'cls' reads the self-attention maps, which are missing")
    names = [*signature.input_names, *signature.outputs.values()]
    if len(set(names)) != len(names):
        raise SignatureError("signature: one graph tensor is named for two roles")


def check_graph(signature: Signature, inputs: Mapping[str, str], outputs: Mapping[str, tuple[int, ...]]) -> None:
    """The named tensors exist with usable types and ranks: ``inputs`` name → dtype, ``outputs`` name → shape."""
    expected_inputs = signature.input_names
    if sorted(inputs) != sorted(expected_inputs):
        raise SignatureError(f"the graph's inputs are {sorted(inputs)}, the signature names {expected_inputs}")
    if inputs[signature.token_ids] not in ID_DTYPES:
        raise SignatureError(f"the token-id input must be int32 or int64, not {inputs[signature.token_ids]}")
    for role, name in (("mask", signature.mask), ("segment", signature.segments)):
        if name is not None and inputs[name] != inputs[signature.token_ids]:
            raise SignatureError(f"the {role} input must have the token ids' dtype")
    ranks = {PROBABILITIES: 2, ATTENTION: 2, SELF_ATTENTION: LAYOUT_RANKS[signature.self_attention_layout]}
    for role, name in signature.outputs.items():
        if name not in outputs:
            raise SignatureError(f"signature.outputs.{role}: the graph has no output '{name}'")
        if len(outputs[name]) != ranks[role]:
            raise SignatureError(f"signature.outputs.{role}: '{name}' has rank {len(outputs[name])}, not {ranks[role]}")


def _section(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise SignatureError(f"signature.{key}: expected an object")
    return value


def _name(section: Mapping[str, Any], key: str, where: str) -> str | None:
    value = section.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise SignatureError(f"{where}: expected a tensor name or null")
    return value


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SignatureError("signature.attention_layers: expected a list of layer names")
    return tuple(value)


def _choice(raw: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str | None) -> Any:
    value = raw.get(key, default)
    if value is not None and value not in choices:
        raise SignatureError(f"signature.{key}: expected one of {list(choices)}, got {str(value)[:40]!r}")
    return value


def _flag(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise SignatureError(f"signature.{key}: expected true or false")
    return value


def _integer(raw: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = raw.get(key, default)
    if type(value) is not int or value < minimum:
        raise SignatureError(f"{key}: expected an integer of at least {minimum}")
    return value


def _optional_integer(raw: Mapping[str, Any], key: str) -> int | None:
    return None if raw.get(key) is None else _integer(raw, key, 0, minimum=1)
