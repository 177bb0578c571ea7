"""Distill any teacher into any student with ofa's losses: a RoBERTa teacher, a BiLSTM student.

The losses in ``ofa.distill`` take model outputs (``.logits``, ``.hidden_states``), so they work
for pairs that are not supernets. Here a small RoBERTa (built from a config, briefly fine-tuned)
teaches a BiLSTM on Rotten Tomatoes: KL on logits at temperature T (times T^2), hard labels with
weight alpha, and hidden-state MSE from the BiLSTM output to the teacher's last layer through a
learned linear adaptor (their widths differ).

    python examples/distill_any_pair.py --steps 60
"""

from __future__ import annotations

import argparse
import os
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import AutoTokenizer, RobertaConfig, RobertaForSequenceClassification  # noqa: E402

from ofa.data import (  # noqa: E402
    load_movie_reviews,
    pad_collate,  # noqa: E402
    tokenize,
)
from ofa.distill import DistillConfig, HiddenAdaptor, distillation_loss  # noqa: E402
from ofa.embedded import minilm_path  # noqa: E402


class BiLSTMClassifier(nn.Module):
    """Embedding, one bidirectional LSTM, mean pooling over real tokens, a linear head."""

    def __init__(self, vocab_size: int, *, dim: int = 64, num_labels: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * dim, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: object):
        states, _ = self.lstm(self.embed(input_ids))  # (B, T, 2 * dim)
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1)
        # hidden_states as transformers lays them out: (embeddings, layer 1, ...)
        return SimpleNamespace(logits=self.head(pooled), hidden_states=(None, states))


def batches(data, batch_size: int, steps: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(len(data), (batch_size,), generator=generator).tolist()
        yield pad_collate(data[rows], 0)


def accuracy(model: nn.Module, data) -> float:
    model.eval()
    with torch.no_grad():
        batch = pad_collate(data[:], 0)
        labels = batch.pop("labels")
        logits = model(**batch).logits
    model.train()
    return (logits.argmax(-1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="steps for teacher and student")
    parser.add_argument("--rows", type=int, default=1200, help="training rows")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.3)
    args = parser.parse_args()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    task = load_movie_reviews(limit=args.rows)
    train = tokenize(task["train"], tokenizer, max_length=32)
    test = tokenize(task["test"].select(range(200)), tokenizer, max_length=32)

    teacher = RobertaForSequenceClassification(
        RobertaConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=256,
            max_position_embeddings=40,
            pad_token_id=0,
            num_labels=2,
        )
    )
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=1e-3)
    for batch in batches(train, 32, args.steps, seed=1):  # a quick fine-tune on hard labels
        labels = batch.pop("labels")
        nn.functional.cross_entropy(teacher(**batch).logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad()
    teacher.eval()

    student = BiLSTMClassifier(tokenizer.vocab_size)
    adaptor = HiddenAdaptor(128, teacher.config.hidden_size)  # BiLSTM width 128 -> teacher width
    config = DistillConfig(temperature=args.temperature, alpha=args.alpha, hidden_weight=0.1)
    params = list(student.parameters()) + list(adaptor.parameters())
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    for step, batch in enumerate(batches(train, 32, args.steps, seed=2)):
        labels = batch.pop("labels")
        with torch.no_grad():
            teacher_out = teacher(**batch, output_hidden_states=True)
        loss, parts = distillation_loss(
            student(**batch),
            teacher_out,
            labels,
            config,
            adaptor=adaptor,
            attention_mask=batch["attention_mask"],
            mapping=(teacher.config.num_hidden_layers - 1,),
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 20 == 0:
            print(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in parts.items()))
    print(
        f"test accuracy: teacher {accuracy(teacher, test):.3f}, student {accuracy(student, test):.3f}"
    )


if __name__ == "__main__":
    main()
