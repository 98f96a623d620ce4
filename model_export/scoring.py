"""Classification scores, shared by training, the baseline and the variants."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def score(truth: list[int], predicted: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": round(float(accuracy_score(truth, predicted)), 4),
        "macro_f1": round(float(f1_score(truth, predicted, average="macro")), 4),
    }
