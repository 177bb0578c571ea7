"""Fine-tune a pretrained encoder into the task teacher (hard labels, AdamW), or train a small
causal LM from scratch on token blocks (where no pretrained one installs offline)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import datasets
from transformers import PreTrainedModel

from ofa._json import JsonMixin
from ofa.distill import DistillConfig
from ofa.supernet import convert
from ofa.training import PhaseConfig, TrainConfig, train_

__all__ = ["FinetuneConfig", "finetune", "pretrain_causal_lm"]


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(JsonMixin):
    """Plain fine-tuning: ``epochs`` passes with warmup then linear decay."""

    epochs: float = 2.0
    batch_size: int = 32
    grad_accum_steps: int = 1
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every_steps: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if not self.epochs > 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        self.train_config()  # checks the rest

    def train_config(self, **phase: Any) -> TrainConfig:
        return TrainConfig(
            phases=(PhaseConfig(name="finetune", epochs=self.epochs, **phase),),
            batch_size=self.batch_size,
            grad_accum_steps=self.grad_accum_steps,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            warmup_fraction=self.warmup_fraction,
            max_grad_norm=self.max_grad_norm,
            seed=self.seed,
            distill=DistillConfig(alpha=1.0),
            checkpoint_every_steps=self.checkpoint_every_steps,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown FinetuneConfig fields {sorted(unknown)}")
        return cls(**data)


def finetune(
    model: PreTrainedModel,
    *,
    train_data: datasets.Dataset,
    config: FinetuneConfig | None = None,
    output_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
) -> PreTrainedModel:
    """Fine-tune a sequence classifier on hard labels; returns a new trained model.

    ``model`` is not modified. The run (metrics, checkpoints, ``--resume``) is the one of
    :func:`ofa.train_` with a single phase that trains only the full network.

    Example:
        >>> teacher = ofa.finetune(BertForSequenceClassification.from_pretrained(path,
        ...     num_labels=2), train_data=train, output_dir="runs/teacher")
    """
    config = config or FinetuneConfig()
    if getattr(model, "num_labels", None) is None or not hasattr(model, "classifier"):
        raise ValueError(
            "finetune needs a sequence-classification model (e.g. BertForSequenceClassification)"
        )
    labels = set(train_data["labels"])
    if max(labels) >= model.num_labels:
        raise ValueError(
            f"the data has labels up to {max(labels)} but the model has {model.num_labels}: "
            f"load it with num_labels={max(labels) + 1}"
        )
    supernet = convert(model)
    full = supernet.space.max_subnet()
    train_(
        supernet,
        teacher=None,
        train_data=train_data,
        config=config.train_config(subnet=full),
        output_dir=output_dir,
        resume=resume,
        progress=progress,
    )
    trained: PreTrainedModel = supernet.extract(full)  # type: ignore[assignment]
    if hasattr(trained.config, "ofa_subnet"):
        del trained.config.ofa_subnet
    return trained.eval()


def pretrain_causal_lm(
    model: PreTrainedModel,
    blocks: datasets.Dataset,
    *,
    steps: int,
    lr: float = 3e-3,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> None:
    """Next-token training of ``model`` in place on random batches of ``blocks`` (``input_ids``
    rows of one length, :func:`ofa.data_text.load_text_blocks`): AdamW with weight decay 0.01,
    a one-cycle schedule peaking at ``lr``, gradients clipped to norm 1. Leaves it in eval mode.

    Example:
        >>> pretrain_causal_lm(LlamaForCausalLM(config), blocks, steps=400)
    """
    import torch
    from tqdm.auto import tqdm

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    ids = torch.tensor(blocks["input_ids"])
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with tqdm(range(steps), desc="teacher", disable=not progress) as bar:
        for _ in bar:
            rows = torch.randint(len(ids), (batch_size,), generator=generator)
            loss = model(input_ids=ids[rows], labels=ids[rows]).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
