"""Probabilities -> the published result format: labels, top-k, threshold."""
from __future__ import annotations

import numbers

import numpy as np


def validate_top_k(top_k: object) -> int:
    """top_k must be a positive integer (bool is not accepted)."""
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    return int(top_k)


def validate_threshold(threshold: object) -> float:
    """threshold must be a real number in [0, 1]."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a number between 0 and 1, got {threshold!r}")
    return float(threshold)


def top_k_predictions(probs: np.ndarray, labels: list[str], top_k: int, threshold: float) -> dict[str, float]:
    """The `top_k` most probable classes whose probability is >= `threshold`, descending.

    Ties keep the lower class id first (stable sort). A label name that occurs twice in the label
    file keeps its higher probability (the publisher's code kept the lower one by accident).
    """
    probs = np.asarray(probs, dtype=np.float32).reshape(-1)
    if probs.shape[0] != len(labels):
        raise ValueError(f"{probs.shape[0]} probabilities for {len(labels)} labels")
    order = np.argsort(-probs, kind="stable")[:top_k]
    result: dict[str, float] = {}
    for class_id in order:
        prob = float(probs[class_id])
        if prob >= threshold and labels[class_id] not in result:
            result[labels[class_id]] = prob
    return result
