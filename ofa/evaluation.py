"""Accuracy of one subnet with the supernet's shared weights: no retraining."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import datasets
import torch

from ofa._metrics import (
    LanguageModelScores,
    accuracy,
    language_model_scores,
    model_outputs,
)
from ofa.calibrate import calibrate_bn_, has_batch_norm
from ofa.data_images import ImageData
from ofa.families import family_named
from ofa.space import Subnet
from ofa.supernet import Supernet

__all__ = [
    "evaluate",
    "accuracy",
    "perplexity",
    "language_model_scores",
    "LanguageModelScores",
    "majority_rate",
    "accuracy_note",
    "model_outputs",
]

logger = logging.getLogger(__name__)


def evaluate(
    supernet: Supernet,
    subnet: Subnet,
    data: datasets.Dataset | ImageData,
    *,
    batch_size: int = 64,
    calibration_data: ImageData | Iterable[Any] | None = None,
) -> float:
    """The score of ``subnet`` with the supernet's shared weights (no per-subnet training):
    accuracy for a classifier (BERT family, CNN), next-token accuracy for a decoder on token
    blocks (:func:`ofa.data_text.load_text_blocks`; :func:`perplexity` gives its perplexity).
    Higher is better for every family, so a search can maximise it.

    A BERT-family subnet runs inside the supernet. A CNN subnet needs batch-norm statistics of
    its own: with ``calibration_data`` (an ``ImageData`` or batches as :func:`ofa.calibrate_bn_`
    takes; training images, not the evaluation ones) the subnet is extracted, calibrated and
    evaluated, and the supernet is left untouched. Without it a CNN subnet runs on the
    supernet's running statistics, and a warning says so. A CNN without batch norms has no
    statistics to recompute: it is evaluated as it is, ``calibration_data`` or not.

    Example:
        >>> acc = ofa.evaluate(supernet, supernet.space.min_subnet(), task_validation)
        >>> acc = ofa.evaluate(cnn_supernet, subnet, test_images, calibration_data=train_images)
    """
    if not isinstance(supernet, Supernet):
        raise TypeError(f"evaluate takes an ofa.Supernet, got {type(supernet).__name__}")
    family = family_named(supernet.family_name)
    calibrates = family.calibrates_batch_norm
    if calibration_data is not None and not calibrates:
        raise ValueError("calibration_data recalibrates batch norms: it is for CNN supernets")
    if calibrates and not has_batch_norm(supernet.model):
        calibrates, calibration_data = False, None  # nothing to recalibrate
        logger.debug("the supernet has no batch norm: evaluated without calibration")
    if calibration_data is not None:
        supernet.space.check(subnet)
        model = supernet.extract(subnet)
        if isinstance(calibration_data, ImageData):
            calibration_data = calibration_data.batches(batch_size)
        calibrate_bn_(model, calibration_data)
        return family.score(model, data, batch_size)
    if calibrates:
        logger.warning(
            "evaluating a CNN subnet on the supernet's batch-norm statistics; pass "
            "calibration_data=<training images> for its own"
        )
    with supernet.using(subnet):
        return family.score(supernet, data, batch_size)


def perplexity(
    supernet: Supernet, subnet: Any, data: datasets.Dataset, *, batch_size: int = 16
) -> LanguageModelScores:
    """Perplexity (and next-token accuracy) of a decoder ``subnet`` with the supernet's shared
    weights, on token blocks (:func:`ofa.data_text.load_text_blocks`).

    Example:
        >>> scores = ofa.perplexity(supernet, supernet.space.min_subnet(), heldout_blocks)
        >>> scores.perplexity, scores.accuracy
    """
    if not isinstance(supernet, Supernet):
        raise TypeError(f"perplexity takes an ofa.Supernet, got {type(supernet).__name__}")
    if not family_named(supernet.family_name).language_model:
        raise ValueError(
            f"perplexity is for decoder (causal LM) supernets; this one is "
            f"{supernet.family_name!r}: use ofa.evaluate"
        )
    supernet.space.check(subnet)
    with supernet.using(subnet):
        return language_model_scores(supernet, data, batch_size=batch_size)


def majority_rate(data: datasets.Dataset | ImageData | Sequence[int] | torch.Tensor) -> float:
    """Share of the most common label: the accuracy of always predicting that one class.

    ``data`` is a tokenized dataset with ``labels``, an :class:`ofa.data_images.ImageData`, or
    the labels themselves.

    Example:
        >>> majority_rate([0, 1, 1, 1])
        0.75
    """
    if isinstance(data, ImageData):
        labels: Any = data.labels.tolist()
    elif isinstance(data, datasets.Dataset):
        if "labels" not in data.column_names:
            raise ValueError("data has no 'labels' column (see ofa.data.tokenize)")
        labels = data["labels"]
    elif isinstance(data, torch.Tensor):
        labels = data.tolist()
    else:
        labels = list(data)
    if len(labels) == 0:
        raise ValueError("data is empty: no majority-class rate")
    counts = Counter(int(label) for label in labels)
    return max(counts.values()) / len(labels)


def accuracy_note(accuracy: float, majority: float, n: int) -> str | None:
    """A one-line warning when ``accuracy`` is not clearly above the majority-class rate.

    "Clearly above" is more than two standard errors of a binomial share at the majority rate
    over ``n`` examples (``2 * sqrt(p (1 - p) / n)``); ``None`` when it is.

    Example:
        >>> accuracy_note(0.51, 0.50, 300)
        'accuracy 0.510 is not clearly above the majority-class rate 0.500 ...'
        >>> accuracy_note(0.85, 0.50, 300) is None
        True
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    margin = 2.0 * math.sqrt(majority * (1.0 - majority) / n)
    if accuracy > majority + margin:
        return None
    where = "below" if accuracy < majority - margin else "not clearly above"
    return (
        f"accuracy {accuracy:.3f} is {where} the majority-class rate {majority:.3f} "
        f"(always predicting the most common label; 2 standard errors over {n} examples: "
        f"{margin:.3f}): the model may have learned little; train longer, check the labels, "
        "or evaluate on more examples"
    )
