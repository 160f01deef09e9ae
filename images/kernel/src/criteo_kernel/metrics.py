"""Click-prediction metrics, the same offline (evaluate, the blessing) and online (the monitor)."""
from __future__ import annotations

import numpy as np


def roc_auc(label: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties; NaN when one class is absent."""
    label = np.asarray(label).astype(bool)
    score = np.asarray(score)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg_rank = first + (counts + 1) / 2.0  # 1-based average rank of each tie group
    ranks = np.empty(len(score))
    ranks[order] = np.repeat(avg_rank, counts)
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(label: np.ndarray, prob: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(prob).astype(np.float64), eps, 1 - eps)
    y = np.asarray(label).astype(np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
