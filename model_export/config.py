"""Sizes of the model and knobs of a training run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the attention classifier."""

    vocab_size: int = 8000
    max_len: int = 128
    d_model: int = 96
    num_heads: int = 4
    num_layers: int = 2
    ff_dim: int = 192
    dropout: float = 0.3
    num_classes: int = 3

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        for name in ("vocab_size", "max_len", "d_model", "num_heads", "num_layers", "ff_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.num_classes < 2:
            raise ValueError("a classifier needs at least two classes")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """How one training run goes: splits, optimisation, early stopping, seeds."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """From model.json's ``train_config``, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 2
    test_fraction: float = 0.1
    validation_fraction: float = 0.1
    seed: int = 0
    class_weighting: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
