"""Counts and coupled units of decoder supernets: parameters, FLOPs, importance unit groups."""

from __future__ import annotations

from typing import Any

from torch import nn

from ofa.decoder_space import DecoderSearchSpace, DecoderSubnet
from ofa.groups import UnitGroup

__all__ = ["flops", "num_params", "prefix", "tied", "unit_groups"]


def prefix(model: Any) -> str:
    """The parameter-name prefix of the bare decoder (``"model."`` in a causal LM)."""
    return "" if model.base_model is model else model.base_model_prefix + "."


def tied(model: Any) -> bool:
    """The LM head shares the input embedding's weight."""
    head = getattr(model, "lm_head", None)
    return isinstance(head, nn.Linear) and head.weight is model.base_model.embed_tokens.weight


def _biases(model: Any) -> dict[str, bool]:
    layer = model.base_model.layers[0]
    modules = {
        name: getattr(layer.self_attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")
    }
    modules.update({name: getattr(layer.mlp, name) for name in ("gate_proj", "down_proj")})
    return {name: module.bias is not None for name, module in modules.items()}


def num_params(model: Any, space: DecoderSearchSpace, subnet: DecoderSubnet) -> int:
    """Parameters of the model ``extract(subnet)`` returns (a tied head counted once)."""
    hidden, head_dim = subnet.hidden_size, space.head_dim
    bias = _biases(model)
    vocab = model.base_model.embed_tokens.num_embeddings
    total = vocab * hidden + hidden  # embeddings, final norm
    for heads, kv_heads, ffn_dim in zip(subnet.num_heads, subnet.num_kv_heads, subnet.ffn_dims):
        width, kv_width = heads * head_dim, kv_heads * head_dim
        total += (hidden + bias["q_proj"]) * width + 2 * (hidden + bias["k_proj"]) * kv_width
        total += (width + bias["o_proj"]) * hidden
        total += (
            2 * (hidden + bias["gate_proj"]) * ffn_dim + (ffn_dim + bias["down_proj"]) * hidden
        )
        total += 2 * hidden  # the two RMSNorms
    head = getattr(model, "lm_head", None)
    if isinstance(head, nn.Linear) and not tied(model):
        total += hidden * head.out_features + (head.out_features if head.bias is not None else 0)
    return total


def flops(
    model: Any,
    space: DecoderSearchSpace,
    subnet: DecoderSubnet,
    *,
    batch_size: int,
    seq_len: int,
    logits: int,
    context: int = 0,
) -> int:
    """Matrix-multiply FLOPs (2 per multiply-add) of one forward pass of ``batch_size``
    sequences of ``seq_len`` new tokens, after ``context`` tokens already in the KV cache (a
    decode step: ``seq_len`` 1), whose LM head runs on the last ``logits`` positions."""
    tokens = batch_size * seq_len
    hidden, head_dim = subnet.hidden_size, space.head_dim
    total = 0
    for heads, kv_heads, ffn_dim in zip(subnet.num_heads, subnet.num_kv_heads, subnet.ffn_dims):
        width, kv_width = heads * head_dim, kv_heads * head_dim
        total += 2 * tokens * hidden * (2 * width + 2 * kv_width)  # Q, K, V and O
        keys = context + seq_len
        total += 2 * 2 * batch_size * heads * seq_len * keys * head_dim  # QK^T and AV
        total += 2 * 3 * tokens * hidden * ffn_dim  # gate, up and down
    head = getattr(model, "lm_head", None)
    if isinstance(head, nn.Linear):
        total += 2 * batch_size * min(logits, seq_len) * hidden * head.out_features
    return total


def unit_groups(model: Any, space: DecoderSearchSpace) -> list[UnitGroup]:
    """Per layer: the KV heads (each with its query heads), the query heads within every KV
    head (one permutation for all of them), the MLP neurons; and the residual channels.

    Members name the head-layout parameters of :mod:`ofa.elastic.heads`: ``q_proj.weight`` is
    ``(kv, heads_per_kv, head_dim, hidden)``, ``k_proj`` / ``v_proj`` ``(kv, head_dim,
    hidden)``, ``o_proj`` ``(hidden, kv, heads_per_kv, head_dim)``.
    """
    start = prefix(model)
    bias = _biases(model)
    groups = []
    hidden: list[tuple[str, int]] = [(f"{start}embed_tokens.weight", 1)]
    for index in range(space.num_layers):
        layer = f"{start}layers.{index}."
        q, k, v, o = (f"{layer}self_attn.{n}_proj" for n in "qkvo")
        gate, up, down = (f"{layer}mlp.{n}_proj" for n in ("gate", "up", "down"))
        kv_members = [
            (f"{q}.weight", 0),
            (f"{k}.weight", 0),
            (f"{v}.weight", 0),
            (f"{o}.weight", 1),
        ]
        head_members = [(f"{q}.weight", 1), (f"{o}.weight", 2)]
        if bias["q_proj"]:
            kv_members.append((f"{q}.bias", 0))
            head_members.append((f"{q}.bias", 1))
        if bias["k_proj"]:
            kv_members += [(f"{k}.bias", 0), (f"{v}.bias", 0)]
        ffn_members = [(f"{gate}.weight", 0), (f"{up}.weight", 0), (f"{down}.weight", 1)]
        if bias["gate_proj"]:
            ffn_members += [(f"{gate}.bias", 0), (f"{up}.bias", 0)]
        groups += [
            UnitGroup(
                name=f"{layer}kv_heads",
                size=space.max_num_kv_heads,
                block=1,
                members=tuple(kv_members),
            ),
            UnitGroup(
                name=f"{layer}heads",
                size=space.max_heads_per_kv,
                block=1,
                members=tuple(head_members),
            ),
            UnitGroup(
                name=f"{layer}ffn", size=space.max_ffn_dim, block=1, members=tuple(ffn_members)
            ),
        ]
        hidden += [(f"{q}.weight", 3), (f"{k}.weight", 2), (f"{v}.weight", 2), (f"{o}.weight", 0)]
        hidden += [(f"{gate}.weight", 1), (f"{up}.weight", 1), (f"{down}.weight", 0)]
        hidden += [(f"{o}.bias", 0)] if bias["o_proj"] else []
        hidden += [(f"{down}.bias", 0)] if bias["down_proj"] else []
        hidden += [
            (f"{layer}{n}.weight", 0) for n in ("input_layernorm", "post_attention_layernorm")
        ]
    hidden.append((f"{start}norm.weight", 0))
    if isinstance(getattr(model, "lm_head", None), nn.Linear) and not tied(model):
        hidden.append(("lm_head.weight", 1))  # tied: the embedding's weight, listed once
    groups.append(
        UnitGroup(name="hidden", size=space.max_hidden_size, block=1, members=tuple(hidden))
    )
    return groups
