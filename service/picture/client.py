"""The prediction to draw, asked of a running service over its public REST API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np


class PictureError(Exception):
    """A failure to report in one line: the service unreachable, an API error, an answer of the wrong shape."""


@dataclass(frozen=True)
class Explanation:
    """One prediction with its attention, as the API returned it."""

    model: str
    version: str
    text: str
    label: str
    probabilities: dict[str, float]
    tokens: list[str]
    attention: np.ndarray  # (T,)
    rollout: np.ndarray | None  # (T,)
    self_attention: np.ndarray | None  # (layers, heads, T, T)
    truncated: bool
    occlusion: np.ndarray | None = None  # (T,): the predicted class's probability minus it without each token


def predict_path(model: str, version: str | None) -> str:
    """The native predict route for a model, or for one of its versions."""
    versioned = f"/versions/{quote(version, safe='')}" if version else ""
    return f"/v1/models/{quote(model, safe='')}{versioned}:predict"


def parse_prediction(payload: Any, model: str, version: str, text: str) -> Explanation:
    """Check a ``{"predictions": [row]}`` answer and turn its row into an ``Explanation``."""
    try:
        row = payload["predictions"][0]
        tokens = [str(token) for token in row["tokens"]]
        attention = np.asarray(row["attention"], dtype=np.float64)
        rollout = np.asarray(row["rollout"], dtype=np.float64) if "rollout" in row else None
        matrices = np.asarray(row["self_attention"], dtype=np.float64) if "self_attention" in row else None
        occlusion = np.asarray(row["occlusion"], dtype=np.float64) if "occlusion" in row else None
        probabilities = {str(label): float(p) for label, p in row["probabilities"].items()}
        label, truncated = str(row["label"]), bool(row.get("truncated", False))
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise PictureError(f"the service's answer is not a prediction with attention ({error!r})") from error
    length = len(tokens)
    shapes_fit = (
        attention.shape == (length,)
        and (rollout is None or rollout.shape == (length,))
        and (matrices is None or (matrices.ndim == 4 and matrices.shape[2:] == (length, length)))
        and (occlusion is None or occlusion.shape == (length,))
    )
    if not length or not shapes_fit:
        raise PictureError("the service's answer has attention that does not match its tokens")
    return Explanation(
        model, version, text, label, probabilities, tokens, attention, rollout, matrices, truncated, occlusion
    )


def fetch_explanation(
    url: str,
    model: str,
    version: str | None,
    text: str,
    *,
    api_key: str | None = None,
    truncate: bool = False,
    timeout_s: float = 30.0,
    occlusion: bool = True,
) -> Explanation:
    """Ask the service for one text's prediction with pooling attention, self-attention, rollout and (unless
    ``occlusion`` is False) what changed the prediction."""
    parameters: dict[str, object] = {"attention": "all", "truncate": truncate}
    if occlusion:
        parameters["explain"] = "occlusion"
    body = {"instances": [text], "parameters": parameters}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        endpoint = url.rstrip("/") + predict_path(model, version)
        response = httpx.post(endpoint, json=body, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as error:
        raise PictureError(f"could not reach the service at {url}: {error}") from error
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code != 200:
        reason = payload.get("error") if isinstance(payload, dict) else None
        raise PictureError(f"the service answered {response.status_code}: {reason or response.reason_phrase}")
    return parse_prediction(payload, model, response.headers.get("X-Model-Version", version or "?"), text)
