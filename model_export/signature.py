"""The exporter's side of the model signature in ``model.json`` (format: docs/MODEL_FOLDER.md).

The signature says which graph tensor plays which role. ``train`` and ``import`` write it; ``variants``,
``verify`` and ``derive`` read it back here so they work on any folder. The service has its own reader
(``service/signature.py``): the folder is the only contract, neither package imports the other. A folder
written before signatures existed reads as the fixed names ``train`` has always used.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

INPUT_IDS, ATTENTION_MASK = "input_ids", "attention_mask"
PROBABILITIES, ATTENTION, SELF_ATTENTION = "probabilities", "attention", "self_attention"
ROLES = (PROBABILITIES, ATTENTION, SELF_ATTENTION)
PADDINGS = ("mask", "pad_id", "none")


@dataclass(frozen=True)
class Signature:
    """Roles → graph tensor names (``outputs`` holds only the roles the graph has), and how to pad."""

    token_ids: str
    mask: str | None
    outputs: Mapping[str, str]
    attention_source: str | None = None
    self_attention_layout: str = "BLHTT"
    attention_layers: tuple[str, ...] = ()
    pad_id: int = 0
    padding: str = "mask"
    fixed_length: int | None = None
    text: Mapping[str, Any] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [self.token_ids, *([self.mask] if self.mask else [])]

    @property
    def paddable(self) -> bool:
        """Whether sequences of different lengths may share one call (padding changes no answer)."""
        return self.padding != "none" or self.fixed_length is not None

    def name(self, role: str) -> str | None:
        return self.outputs.get(role)

    def to_json(self) -> dict[str, Any]:
        """The ``signature`` object of ``model.json``."""
        return {
            "inputs": {"token_ids": self.token_ids, "mask": self.mask},
            "outputs": {role: self.outputs.get(role) for role in ROLES},
            "attention_source": self.attention_source,
            "self_attention_layout": self.self_attention_layout,
            "attention_layers": list(self.attention_layers),
            "pad_id": self.pad_id,
            "padding": self.padding,
            "fixed_length": self.fixed_length,
            "text": dict(self.text),
        }


def standard_signature(
    *,
    mask: bool,
    attention_source: str | None,
    self_attention: bool,
    attention_layers: tuple[str, ...] = (),
    pad_id: int = 0,
    padding: str = "mask",
    fixed_length: int | None = None,
    text: Mapping[str, Any] | None = None,
) -> Signature:
    """A signature with the graph names the exporter always writes (``input_ids``, ``probabilities``, ...)."""
    if padding not in PADDINGS or (padding == "mask") != mask:
        raise ValueError(f"padding {padding!r} does not fit a graph {'with' if mask else 'without'} a mask input")
    outputs = {PROBABILITIES: PROBABILITIES}
    if attention_source is not None:
        outputs[ATTENTION] = ATTENTION
    if self_attention:
        outputs[SELF_ATTENTION] = SELF_ATTENTION
    return Signature(
        token_ids=INPUT_IDS,
        mask=ATTENTION_MASK if mask else None,
        outputs=outputs,
        attention_source=attention_source,
        attention_layers=attention_layers,
        pad_id=pad_id,
        padding=padding,
        fixed_length=fixed_length,
        text=dict(text or {"origin": "tokenizer"}),
    )


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
    """The signature of a ``model.json`` document, or the fixed names of a folder written before it existed."""
    raw = document.get("signature")
    if raw is None:
        outputs = {PROBABILITIES: PROBABILITIES, ATTENTION: ATTENTION}
        if SELF_ATTENTION in graph_outputs:
            outputs[SELF_ATTENTION] = SELF_ATTENTION
        return Signature(
            INPUT_IDS,
            ATTENTION_MASK,
            outputs,
            attention_source="pooling",
            pad_id=int(document.get("pad_token_id", 0)),
            text={"origin": "trained"},
        )
    try:
        return Signature(
            token_ids=str(raw["inputs"]["token_ids"]),
            mask=raw["inputs"].get("mask"),
            outputs={role: str(name) for role, name in raw["outputs"].items() if name is not None},
            attention_source=raw.get("attention_source"),
            self_attention_layout=str(raw.get("self_attention_layout", "BLHTT")),
            attention_layers=tuple(raw.get("attention_layers", ())),
            pad_id=int(raw.get("pad_id", 0)),
            padding=str(raw.get("padding", "mask")),
            fixed_length=raw.get("fixed_length"),
            text=dict(raw.get("text", {})),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"model.json: malformed signature ({type(exc).__name__}: {exc})") from exc
