"""Edits of an ONNX graph shared by the exporter, the importer's attention probe and the lean rewrite."""

from __future__ import annotations

from collections.abc import Mapping

import onnx


def rename_inputs(graph: onnx.GraphProto, renamed: Mapping[str, str]) -> None:
    """Every node input named in ``renamed`` reads the tensor it maps to instead."""
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in renamed:
                node.input[position] = renamed[name]
