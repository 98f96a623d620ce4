"""The seed's model, made runnable: ``Embedding → CustomAttention → pooling → Dense(relu) → Dense(softmax)``.

The product was first described with a ``CustomAttention`` layer subclassing ``keras.layers.Attention`` that
computes query·keyᵀ similarity, a softmax, and the attention weights. Written literally it unpacks one tensor
as ``[query, key]`` and does not run. Here the one sequence of embeddings is query, key and value
(self-attention): the weights are applied to the values, the result is averaged over the tokens and classified.
The layer returns its weights beside its output, so ``import --attention-layer custom_attention`` finds them.

This file is also the ``--custom-objects`` file of the import: it registers the layer with Keras.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="custom_attention")
class CustomAttention(layers.Attention):
    """Dot-product self-attention on one sequence ``[B, T, D]`` → (``[B, T, D]`` context, ``[B, T, T]`` weights)."""

    def build(self, input_shape: Any) -> None:
        super().build([input_shape, input_shape])  # query and value are the same sequence

    def call(self, inputs: Any) -> tuple[Any, Any]:
        scores = ops.matmul(inputs, ops.transpose(inputs, (0, 2, 1)))  # query · keyᵀ
        if self.use_scale:
            scores = scores * self.scale
        weights = ops.softmax(scores, axis=-1)
        return ops.matmul(weights, inputs), weights

    def compute_mask(self, inputs: Any, mask: Any = None) -> None:
        return None  # no mask: the parent's would expect [query, value]

    def compute_output_spec(self, inputs: Any, **kwargs: Any) -> tuple[Any, Any]:
        batch, length = inputs.shape[0], inputs.shape[1]
        return keras.KerasTensor(inputs.shape, inputs.dtype), keras.KerasTensor((batch, length, length), inputs.dtype)


def build_model(vocab_size: int, classes: int, dim: int = 32) -> keras.Model:
    """The classifier of token ids (no mask: it is never padded when served)."""
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    embedded = layers.Embedding(vocab_size, dim, name="embedding")(ids)
    context, _weights = CustomAttention(use_scale=True, name="custom_attention")(embedded)
    pooled = layers.GlobalAveragePooling1D(name="pooling")(context)
    hidden = layers.Dense(dim, activation="relu", name="hidden")(pooled)
    probabilities = layers.Dense(classes, activation="softmax", name="probabilities")(hidden)
    return keras.Model(ids, probabilities, name="custom_attention_classifier")
