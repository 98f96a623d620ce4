"""Reading deployment manifests: YAML documents, container environments, durations."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

# The Kubernetes version the manifests are validated against (one that kubernetes-validate bundles): the oldest
# upstream-supported release with every feature they use (preStop sleep, PDB unhealthyPodEvictionPolicy).
KUBERNETES_VERSION = "1.33.0"
DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def parse_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    """A Kubernetes container's environment variables that have literal values."""
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def seconds(duration: str | float) -> float:
    """A compose duration ('30s', '1m30s', '500ms') or a number of seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration}"
    return sum(float(number) * DURATION_UNITS[unit] for number, unit in parts)


def interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}`` and ``${NAME-default}`` as they read with NAME unset."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", lambda m: m[1], value)
