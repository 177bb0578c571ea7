"""Tiny BERT-family models and inputs for tests (random weights, built from configs)."""

from __future__ import annotations

import textwrap

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    ElectraConfig,
    ElectraForSequenceClassification,
    ElectraModel,
    RobertaConfig,
    RobertaForSequenceClassification,
    RobertaModel,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

VOCAB = 100
_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=40,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def make_model(kind: str = "bert-cls", *, attn: str = "eager", seed: int = 0, **overrides):
    """A tiny random model of ``kind`` in eval mode."""
    torch.manual_seed(seed)
    settings = {**_COMMON, **overrides}
    num_labels = settings.pop("num_labels", 3)
    if kind in ("bert", "bert-cls"):
        config = BertConfig(**settings, num_labels=num_labels)
        cls = BertModel if kind == "bert" else BertForSequenceClassification
    elif kind in ("roberta", "roberta-cls"):
        config = RobertaConfig(**settings, num_labels=num_labels, pad_token_id=1)
        cls = RobertaModel if kind == "roberta" else RobertaForSequenceClassification
    elif kind == "xlmr-cls":
        config = XLMRobertaConfig(**settings, num_labels=num_labels, pad_token_id=1)
        cls = XLMRobertaForSequenceClassification
    elif kind in ("electra", "electra-cls", "electra-project"):
        embedding = 16 if kind == "electra-project" else settings["hidden_size"]
        config = ElectraConfig(**settings, embedding_size=embedding, num_labels=num_labels)
        cls = ElectraModel if kind == "electra" else ElectraForSequenceClassification
    else:
        raise ValueError(kind)
    config._attn_implementation = attn
    model = cls(config)
    model.config._attn_implementation = attn
    return model.eval()


KINDS = (
    "bert",
    "bert-cls",
    "roberta",
    "roberta-cls",
    "xlmr-cls",
    "electra-cls",
    "electra-project",
)


def make_inputs(batch: int = 3, length: int = 12, *, seed: int = 1) -> dict[str, torch.Tensor]:
    """Token ids with padding at the end of every row but the first."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(1, batch):
        attention_mask[row, length - 2 * row :] = 0
    input_ids[attention_mask == 0] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def main_output(outputs) -> torch.Tensor:
    logits = getattr(outputs, "logits", None)
    return logits if logits is not None else outputs.last_hidden_state


# The start of a child script run with `python -I -S`: site-packages only (from argv[1]), and a
# finder that refuses the project's packages, so what follows proves it needs none of them.
BLOCK_PROJECT = textwrap.dedent(
    """
    import json, sys
    sys.path.extend(json.loads(sys.argv[1]))

    class _NoProject:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name.split(".")[0] in ("ofa", "search", "export", "tests"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
            return None

    sys.meta_path.insert(0, _NoProject)
    try:
        import ofa  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        sys.exit("ofa is importable in the isolated process")
    """
)
