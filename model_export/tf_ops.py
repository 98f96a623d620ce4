"""Conversions tf2onnx lacks for ops that users' models emit, registered with tf2onnx when this module is imported.

- ``Erfc``: Keras' exact GELU (``keras.activations.gelu(approximate=False)``, what keras-hub's DistilBERT, RoBERTa
  and DeBERTaV3 use) is ``0.5 · x · erfc(-x / √2)`` in TensorFlow; ONNX has ``Erf`` (opset 9) but no ``Erfc``, and
  tf2onnx leaves the node unconverted (an invalid graph). ``erfc(x) = 1 − erf(x)`` exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tf2onnx import utils
from tf2onnx.handler import tf_op

HANDLED = ("Erfc",)


@tf_op("Erfc")
class Erfc:
    @classmethod
    def version_9(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
        dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
        one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
        erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
        node.type = "Sub"
        ctx.replace_inputs(node, [one.output[0], erf.output[0]])
