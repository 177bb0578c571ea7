"""Decoder layers of their own shape: the modeling file shipped in per-layer decoder exports.

``export.save`` copies this file into a checkpoint as ``modeling_ofa.py`` when its layers differ
in heads, KV heads or MLP width (a stock config has one of each), with the three
``from transformers import Llama... as Base...`` lines rewritten for the model's family (Llama,
Qwen2, Mistral). It depends only on torch and transformers, so the checkpoint loads where ofa is
not installed::

    AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True)

The classes subclass the transformers ones and, in ``__init__``, give each decoder layer its own
query heads, KV heads and MLP width by swapping its ``nn.Linear`` modules; the forward pass
(rotary embeddings, Qwen2's biases, Mistral's sliding window, the KV cache, ``generate``) is
transformers' own code. ofa uses :func:`reshape_layer_` to build the same models in process.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import LlamaConfig as BaseConfig
from transformers import LlamaForCausalLM as BaseForCausalLM
from transformers import LlamaModel as BaseModel

MODEL_TYPE = "ofa_llama"
_LISTS = ("ofa_num_heads", "ofa_num_kv_heads", "ofa_ffn_dims")


def _linear(like: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    weight = like.weight
    return nn.Linear(
        in_features,
        out_features,
        bias=like.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )


def reshape_layer_(
    layer: Any,
    *,
    hidden_size: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    ffn_dim: int,
) -> None:
    """Give one decoder layer ``num_heads`` query and ``num_kv_heads`` key/value heads of
    ``head_dim`` and an MLP of ``ffn_dim`` (its Linears are replaced where their shape differs;
    the attention's ``num_key_value_groups`` follows)."""
    if num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} query heads do not split over {num_kv_heads} KV heads")
    attention, mlp = layer.self_attn, layer.mlp
    width, kv_width = num_heads * head_dim, num_kv_heads * head_dim
    shapes = (
        (attention, "q_proj", hidden_size, width),
        (attention, "k_proj", hidden_size, kv_width),
        (attention, "v_proj", hidden_size, kv_width),
        (attention, "o_proj", width, hidden_size),
        (mlp, "gate_proj", hidden_size, ffn_dim),
        (mlp, "up_proj", hidden_size, ffn_dim),
        (mlp, "down_proj", ffn_dim, hidden_size),
    )
    for module, name, in_features, out_features in shapes:
        old = getattr(module, name)
        if (old.in_features, old.out_features) != (in_features, out_features):
            setattr(module, name, _linear(old, in_features, out_features))
    attention.num_key_value_groups = num_heads // num_kv_heads
    attention.head_dim = head_dim
    mlp.intermediate_size = ffn_dim


def reshape_decoder_(decoder: Any, config: Any) -> None:
    """Reshape every layer of ``decoder`` (a bare model) to the per-layer lists of ``config``."""
    lists: list[Any] = [getattr(config, name, None) for name in _LISTS]
    if any(values is None for values in lists):
        raise ValueError(f"this config lacks {', '.join(_LISTS)}")
    if any(len(values) != len(decoder.layers) for values in lists):
        raise ValueError(f"{', '.join(_LISTS)} need one entry per decoder layer")
    for layer, heads, kv_heads, ffn_dim in zip(decoder.layers, *lists):
        reshape_layer_(
            layer,
            hidden_size=config.hidden_size,
            num_heads=int(heads),
            num_kv_heads=int(kv_heads),
            head_dim=int(config.head_dim),
            ffn_dim=int(ffn_dim),
        )


class OfaConfig(BaseConfig):
    """The family's config plus per-layer query heads, KV heads and MLP widths.

    Layer i has ``ofa_num_heads[i]`` query heads over ``ofa_num_kv_heads[i]`` KV heads of
    ``head_dim`` and an MLP of ``ofa_ffn_dims[i]``; ``num_attention_heads``,
    ``num_key_value_heads`` and ``intermediate_size`` hold the largest layer's.
    """

    model_type = MODEL_TYPE

    def __init__(
        self,
        ofa_num_heads: list[int] | None = None,
        ofa_num_kv_heads: list[int] | None = None,
        ofa_ffn_dims: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ofa_num_heads = None if ofa_num_heads is None else list(ofa_num_heads)
        self.ofa_num_kv_heads = None if ofa_num_kv_heads is None else list(ofa_num_kv_heads)
        self.ofa_ffn_dims = None if ofa_ffn_dims is None else list(ofa_ffn_dims)

    def validate_architecture(self) -> None:
        """Heads are per layer and ``head_dim`` is explicit: the hidden size need not be a
        multiple of ``num_attention_heads``."""


class OfaModel(BaseModel):
    """The family's bare decoder with per-layer heads, KV heads and MLP widths."""

    config_class = OfaConfig

    def __init__(self, config: OfaConfig) -> None:
        super().__init__(config)
        reshape_decoder_(self, config)


class OfaForCausalLM(BaseForCausalLM):
    """The family's causal LM with per-layer heads, KV heads and MLP widths."""

    config_class = OfaConfig

    def __init__(self, config: OfaConfig) -> None:
        super().__init__(config)
        reshape_decoder_(self.model, config)
