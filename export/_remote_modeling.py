"""Modeling file shipped inside exported checkpoints whose subnet a vanilla config cannot express.

This file is a template: ``export.save`` copies it into the checkpoint as ``modeling_ofa.py``
with the three ``from transformers import ... as Base...`` lines rewritten for the exported
model's family (BERT, RoBERTa, XLM-RoBERTa, ELECTRA). It depends only on torch and
transformers, so the checkpoint loads where ofa is not installed::

    AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=True)

The classes subclass the transformers ones and, in ``__init__``, give each encoder layer its own
number of heads and FFN width by swapping its ``nn.Linear`` modules; the forward pass is
transformers' own code.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import BertConfig as BaseConfig
from transformers import BertForSequenceClassification as BaseForSequenceClassification
from transformers import BertModel as BaseModel

MODEL_TYPE = "ofa_bert"


class OfaConfig(BaseConfig):
    """The family's config plus per-layer head counts and FFN widths.

    ``ofa_num_heads[i]`` heads of ``ofa_head_dim`` and an FFN of ``ofa_ffn_dims[i]`` in layer i;
    ``num_attention_heads`` / ``intermediate_size`` keep the values a uniform layer would have.
    """

    model_type = MODEL_TYPE

    def __init__(
        self,
        ofa_num_heads: list[int] | None = None,
        ofa_ffn_dims: list[int] | None = None,
        ofa_head_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ofa_num_heads = list(ofa_num_heads) if ofa_num_heads is not None else None
        self.ofa_ffn_dims = list(ofa_ffn_dims) if ofa_ffn_dims is not None else None
        self.ofa_head_dim = ofa_head_dim


def reshape_layer_(
    layer: Any, *, hidden: int, num_heads: int, head_dim: int, ffn_dim: int
) -> None:
    """Give one encoder layer ``num_heads`` heads of ``head_dim`` and an FFN of ``ffn_dim``."""
    attention = layer.attention.self
    width = num_heads * head_dim
    if attention.query.out_features != width or attention.query.in_features != hidden:
        for name in ("query", "key", "value"):
            setattr(attention, name, nn.Linear(hidden, width))
        layer.attention.output.dense = nn.Linear(width, hidden)
    attention.num_attention_heads = num_heads
    attention.attention_head_size = head_dim
    attention.all_head_size = width
    attention.scaling = head_dim**-0.5
    if layer.intermediate.dense.out_features != ffn_dim:
        layer.intermediate.dense = nn.Linear(hidden, ffn_dim)
        layer.output.dense = nn.Linear(ffn_dim, hidden)


def reshape_encoder_(encoder: Any, config: OfaConfig) -> None:
    """Reshape every layer of ``encoder`` to the per-layer widths in ``config``."""
    if config.ofa_num_heads is None or config.ofa_ffn_dims is None or config.ofa_head_dim is None:
        raise ValueError("this config lacks ofa_num_heads / ofa_ffn_dims / ofa_head_dim")
    if not len(config.ofa_num_heads) == len(config.ofa_ffn_dims) == len(encoder.layer):
        raise ValueError("ofa_num_heads and ofa_ffn_dims need one entry per encoder layer")
    for layer, heads, ffn_dim in zip(encoder.layer, config.ofa_num_heads, config.ofa_ffn_dims):
        reshape_layer_(
            layer,
            hidden=config.hidden_size,
            num_heads=int(heads),
            head_dim=int(config.ofa_head_dim),
            ffn_dim=int(ffn_dim),
        )


class OfaModel(BaseModel):
    """The family's bare encoder with per-layer heads and FFN widths."""

    config_class = OfaConfig

    def __init__(self, config: OfaConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        reshape_encoder_(self.encoder, config)


class OfaForSequenceClassification(BaseForSequenceClassification):
    """The family's sequence classifier with per-layer heads and FFN widths."""

    config_class = OfaConfig

    def __init__(self, config: OfaConfig) -> None:
        super().__init__(config)
        reshape_encoder_(self.base_model.encoder, config)
