"""Fitting latency predictors: non-negative least squares on relative error."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["fit_nonnegative", "relative_errors"]


def relative_errors(predicted: Sequence[float], measured: Sequence[float]) -> list[float]:
    return [abs(p - m) / m for p, m in zip(predicted, measured)]


def _nnls_relative(features: np.ndarray, measured: Sequence[float]) -> np.ndarray:
    """Non-negative least squares on relative error (rows divided by the measured latency).

    Non-negative terms keep predictions positive and monotone in every width, so a noisy sample
    cannot make a bigger subnet look faster; a negative term is dropped and the rest refitted.
    """
    targets = np.asarray(measured, dtype=np.float64)
    weights = 1.0 / targets
    design = features * weights[:, None]
    active = list(range(design.shape[1]))
    coefficients = np.zeros(design.shape[1])
    while active:
        solution, *_ = np.linalg.lstsq(design[:, active], targets * weights, rcond=None)
        if solution.min() >= 0:
            coefficients[active] = solution
            break
        del active[int(np.argmin(solution))]
    return coefficients


def fit_nonnegative(
    features: Sequence[Sequence[float]], measured: Sequence[float]
) -> tuple[list[float], list[float]]:
    """The fitted predictor: non-negative weights of FLOP-like features, scaled to <= 1."""
    matrix = np.array(features, dtype=np.float64)
    scale = np.maximum(np.abs(matrix).max(axis=0), 1e-12)
    return _nnls_relative(matrix / scale, measured).tolist(), scale.tolist()
