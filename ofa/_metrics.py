"""What one model scores on data: the metric functions behind :func:`ofa.evaluate`.

A low module: model families name their metric from here (``ModelFamily.score``) without
importing :mod:`ofa.evaluation`, which goes through the families.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import datasets
import torch
from torch import nn

from ofa.data_images import ImageData

__all__ = ["model_outputs", "accuracy", "LanguageModelScores", "language_model_scores"]


def model_outputs(
    model: nn.Module, inputs: dict[str, torch.Tensor], *, output_hidden_states: bool = False
) -> Any:
    """Outputs with ``.logits`` (and ``.hidden_states``) from a transformer or a plain CNN.

    A batch with ``pixel_values`` is an image batch, passed positionally (a CNN returns bare
    logits); any other batch is passed to the transformer as keyword arguments.
    """
    if "pixel_values" in inputs:
        out = model(inputs["pixel_values"])
    else:
        out = model(**inputs, output_hidden_states=output_hidden_states)
    if isinstance(out, torch.Tensor):
        return SimpleNamespace(logits=out, hidden_states=None)
    return out


def _batches(data: datasets.Dataset | ImageData, model: nn.Module, batch_size: int) -> Any:
    from ofa.data import pad_collate

    if isinstance(data, ImageData):
        yield from data.batches(batch_size)
        return
    pad_id = getattr(getattr(model, "config", None), "pad_token_id", None) or 0
    for start in range(0, len(data), batch_size):
        yield pad_collate(data[start : start + batch_size], pad_id)


@torch.no_grad()
def accuracy(
    model: nn.Module, data: datasets.Dataset | ImageData, *, batch_size: int = 64
) -> float:
    """Share of rows whose argmax logit equals the label.

    ``data`` is a tokenized ``datasets.Dataset`` with ``labels`` (:mod:`ofa.data`) or an
    :class:`ofa.data_images.ImageData`; ``model`` returns logits or outputs with ``.logits``.
    """
    if not isinstance(data, ImageData) and (
        not isinstance(data, datasets.Dataset) or "labels" not in data.column_names
    ):
        raise ValueError(
            "data must be a tokenized datasets.Dataset with labels (ofa.data.tokenize) "
            "or an ofa.data_images.ImageData"
        )
    if len(data) == 0:
        raise ValueError("data is empty: nothing to evaluate")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    try:
        for batch in _batches(data, model, batch_size):
            labels = batch.pop("labels")
            inputs = {k: v.to(device) for k, v in batch.items()}
            logits = model_outputs(model, inputs).logits
            correct += int((logits.argmax(-1).cpu() == labels).sum())
    finally:
        model.train(was_training)
    return correct / len(data)


@dataclass(frozen=True)
class LanguageModelScores:
    """A causal LM on token blocks: mean next-token cross entropy (nats), its perplexity
    (``exp`` of it), next-token accuracy (share of positions whose argmax is the next token),
    and the number of positions scored."""

    loss: float
    perplexity: float
    accuracy: float
    tokens: int


def next_token_targets(
    logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits that predict a next token and those tokens, flattened: each position but the
    last predicts its successor; a pair is kept only where both tokens are real (mask 1)."""
    keep = torch.ones_like(input_ids[:, 1:], dtype=torch.bool)
    if attention_mask is not None:
        keep = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
    return logits[:, :-1][keep], input_ids[:, 1:][keep]


@torch.no_grad()
def language_model_scores(
    model: nn.Module, data: datasets.Dataset, *, batch_size: int = 16
) -> LanguageModelScores:
    """Perplexity and next-token accuracy of a causal LM on token blocks
    (:func:`ofa.data_text.load_text_blocks`)."""
    from ofa.data import pad_collate

    if not isinstance(data, datasets.Dataset) or "input_ids" not in data.column_names:
        raise ValueError(
            "data must be token blocks: a datasets.Dataset with input_ids "
            "(see ofa.data_text.load_text_blocks)"
        )
    if len(data) == 0:
        raise ValueError("data is empty: nothing to evaluate")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = getattr(getattr(model, "config", None), "pad_token_id", None) or 0
    total, correct, count = 0.0, 0, 0
    try:
        for start in range(0, len(data), batch_size):
            batch = pad_collate(data[start : start + batch_size], pad_id)
            batch.pop("labels", None)
            inputs = {k: v.to(device) for k, v in batch.items()}
            logits = model_outputs(model, inputs).logits
            predicting, targets = next_token_targets(
                logits, inputs["input_ids"], inputs.get("attention_mask")
            )
            total += float(
                torch.nn.functional.cross_entropy(predicting.float(), targets, reduction="sum")
            )
            correct += int((predicting.argmax(-1) == targets).sum())
            count += int(targets.numel())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("the blocks hold no next-token pair: give blocks of 2 tokens or more")
    loss = total / count
    return LanguageModelScores(
        loss=loss, perplexity=math.exp(min(loss, 700.0)), accuracy=correct / count, tokens=count
    )
