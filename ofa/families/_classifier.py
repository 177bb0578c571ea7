"""The training and evaluation hooks every classifier family shares (BERT family, CNN)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ofa._metrics import accuracy


class ClassifierHooks:
    """One label per example: the loss compares the logits as they are, and a subnet scores its
    accuracy. A family of classifiers inherits these; a family of another task overrides them
    (the decoder family: per-token targets, next-token accuracy)."""

    # a subnet of this family is a causal language model (perplexity applies)
    language_model = False

    @staticmethod
    def loss_inputs(
        student: Any, teacher: Any, labels: Tensor | None, inputs: dict[str, Tensor]
    ) -> tuple[Any, Any, Tensor | None]:
        """What the distillation loss compares: the student's and the teacher's outputs (with
        ``.logits``) and the hard labels."""
        return student, teacher, labels

    @staticmethod
    def score(model: nn.Module, data: Any, batch_size: int) -> float:
        """What :func:`ofa.evaluate` reports for a model of this family (higher is better)."""
        return accuracy(model, data, batch_size=batch_size)
