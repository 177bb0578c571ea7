"""The search's adapter of decoder-only LMs: prefill latency of prompts of the target's length,
one latency-table entry per (query heads per KV head, KV heads, MLP width, hidden width)
layer, Optuna parameters per layer.

A causal LM is timed as ``generate`` runs its prefill: the whole prompt through every layer,
the LM head on the last position only (``logits_to_keep``), the KV cache filled.
"""

from __future__ import annotations

import copy
from typing import Any

import optuna
import torch
from torch import nn
from tqdm.auto import tqdm

from ofa.decoder_space import DecoderSearchSpace, DecoderSubnet
from ofa.families.decoder_modeling import reshape_layer_
from ofa.families.decoder_units import flops as decoder_flops
from ofa.supernet import Supernet
from search.latency import Inputs, LatencyTarget, example_inputs, measure_latency

__all__ = ["DecoderLatency"]

TableKey = tuple[Any, ...]


def _causal(supernet: Supernet) -> bool:
    return isinstance(getattr(supernet.model, "lm_head", None), nn.Linear)


class _LayerRunner(nn.Module):
    """One decoder layer on hidden states, with the rotary embeddings of their positions (the
    mask left to the attention's causal path)."""

    def __init__(self, layer: nn.Module, rotary: nn.Module) -> None:
        super().__init__()
        self.layer, self.rotary = layer, rotary

    def forward(self, hidden_states: torch.Tensor) -> Any:
        positions = torch.arange(hidden_states.shape[1], device=hidden_states.device)[None]
        embeddings = self.rotary(hidden_states, positions)
        return self.layer(
            hidden_states,
            attention_mask=None,
            position_embeddings=embeddings,
            position_ids=positions,
        )


class DecoderLatency:
    """Decoder-only LMs: prompts of ``target.seq_len`` tokens; one table entry per layer shape."""

    name = "decoder"
    csv_names: tuple[str, ...] = (
        "depth",
        "layers",
        "heads_per_kv",
        "num_kv_heads",
        "ffn_dims",
        "hidden_size",
    )

    # ---- targets and inputs ---------------------------------------------------------------
    def resolve_target(self, supernet: Supernet, target: LatencyTarget) -> LatencyTarget:
        if target.image_size is not None:
            raise ValueError(
                "image_size is for CNN supernets; a decoder target takes seq_len (the prompt "
                "length) instead"
            )
        return target

    def complete_target(self, space: DecoderSearchSpace, target: LatencyTarget) -> LatencyTarget:
        return target

    def inputs(self, supernet: Supernet, target: LatencyTarget) -> Inputs:
        inputs = example_inputs(
            batch_size=target.batch_size,
            seq_len=target.seq_len,
            vocab_size=int(supernet.config.vocab_size),
        )
        if _causal(supernet):  # the prefill's logits: the last position only
            inputs["logits_to_keep"] = torch.tensor([target.seq_len - 1])
        return inputs

    def flops(self, supernet: Supernet, subnet: DecoderSubnet, target: LatencyTarget) -> int:
        """FLOPs of the timed prefill (the LM head on one position per prompt)."""
        return decoder_flops(
            supernet.model,
            supernet.space,  # type: ignore[arg-type]
            subnet,
            batch_size=target.batch_size,
            seq_len=target.seq_len,
            logits=1,
        )

    # ---- the latency table and the fitted predictor ---------------------------------------
    def make_plan(self, supernet: Supernet, target: LatencyTarget) -> None:
        return None  # the subnet alone says everything

    def plan_to_json(self, plan: None) -> None:
        return None

    def plan_from_json(self, data: Any) -> None:
        return None

    def table_keys(self, plan: None, subnet: DecoderSubnet) -> list[TableKey]:
        shapes = zip(subnet.heads_per_kv, subnet.num_kv_heads, subnet.ffn_dims)
        return [(g, k, f, subnet.hidden_size) for g, k, f in shapes]

    def calibration_group(self, subnet: DecoderSubnet) -> int:
        return subnet.hidden_size  # embeddings, final norm and LM head scale with it

    def features(self, plan: None, subnet: DecoderSubnet) -> list[float]:
        """FLOP-like terms of a subnet at a fixed prompt shape (the shape scales every term)."""
        d = subnet.hidden_size
        heads, kv_heads, ffn = subnet.num_heads, subnet.num_kv_heads, subnet.ffn_dims
        return [
            float(sum(h * d for h in heads)),  # Q and O projections
            float(sum(k * d for k in kv_heads)),  # K and V projections
            float(sum(heads)),  # attention scores and softmax (T x T per query head)
            float(sum(f * d for f in ffn)),  # gate, up and down
            float(sum(ffn)),  # SiLU and the gating product
            float(subnet.depth * d),  # RMSNorms, residual adds, rotary embeddings
            float(subnet.depth),  # per-layer launch overhead
            float(d),  # embeddings, final norm, LM head
            1.0,
        ]

    def layer_table(
        self,
        supernet: Supernet,
        target: LatencyTarget,
        plan: None,
        *,
        warmup: int,
        rounds: int,
        progress: bool,
    ) -> dict[TableKey, float]:
        """Latency of one decoder layer for every shape the space allows, in isolation."""
        space: DecoderSearchSpace = supernet.space  # type: ignore[assignment]
        table = {}
        keys = [
            (g, k, f, d)
            for d in space.hidden_sizes
            for g in space.heads_per_kv
            for k in space.num_kv_heads
            for f in space.ffn_dims
        ]
        bases = {}
        for d in space.hidden_sizes:
            small: Any = supernet.extract(
                space.uniform(  # type: ignore[arg-type]
                    depth=space.depths[0],
                    heads_per_kv=space.heads_per_kv[-1],
                    num_kv_heads=space.num_kv_heads[-1],
                    ffn_dim=space.ffn_dims[-1],
                    hidden_size=d,
                )
            )
            bases[d] = (small.base_model.layers[0], small.base_model.rotary_emb)
        for g, k, f, d in tqdm(keys, desc="profile layers", disable=not progress):
            layer, rotary = copy.deepcopy(bases[d][0]), bases[d][1]
            reshape_layer_(
                layer,
                hidden_size=d,
                num_heads=g * k,
                num_kv_heads=k,
                head_dim=space.head_dim,
                ffn_dim=f,
            )
            result = measure_latency(
                _LayerRunner(layer, rotary).eval(),
                torch.randn(target.batch_size, target.seq_len, d),
                device=target.device,
                dtype=target.dtype,
                warmup=warmup,
                rounds=rounds,
                num_threads=target.num_threads,
                repeats=3,
            )
            table[(g, k, f, d)] = result.median_ms
        return table

    # ---- the study ------------------------------------------------------------------------
    def uniform_subnets(self, space: DecoderSearchSpace) -> list[DecoderSubnet]:
        return space.uniform_subnets()

    def contains(self, big: DecoderSubnet, small: DecoderSubnet) -> bool:
        """Layer by layer (in kept order): fewer layers, no more query heads per KV head, KV
        heads or MLP width in each, no wider residual stream."""
        if small.depth > big.depth or small.hidden_size > big.hidden_size:
            return False
        pairs = zip(
            zip(small.heads_per_kv, small.num_kv_heads, small.ffn_dims),
            zip(big.heads_per_kv, big.num_kv_heads, big.ffn_dims),
        )
        return all(
            s <= b for small_shape, big_shape in pairs for s, b in zip(small_shape, big_shape)
        )

    def owns(self, space_or_subnet: Any) -> bool:
        return isinstance(space_or_subnet, (DecoderSearchSpace, DecoderSubnet))

    def suggest(self, trial: optuna.trial.Trial, space: DecoderSearchSpace) -> DecoderSubnet:
        """Depth, hidden width, and per layer the query heads per KV head, the KV heads (when
        elastic) and the MLP width. Every layer's values are suggested whatever the depth, so
        the parameter space is fixed; a layer the depth drops ignores its values."""
        depth = int(trial.suggest_categorical("depth", list(space.depths)))
        hidden = int(trial.suggest_categorical("hidden_size", list(space.hidden_sizes)))
        heads, kv_heads, ffn = [], [], []
        for i in range(space.num_layers):
            heads.append(int(trial.suggest_categorical(f"heads_{i}", list(space.heads_per_kv))))
            kv_heads.append(
                int(trial.suggest_categorical(f"kv_heads_{i}", list(space.num_kv_heads)))
                if len(space.num_kv_heads) > 1
                else space.num_kv_heads[0]
            )
            ffn.append(int(trial.suggest_categorical(f"ffn_{i}", list(space.ffn_dims))))
        layers = space.layers_for(depth)
        return DecoderSubnet(
            layers=layers,
            heads_per_kv=tuple(heads[i] for i in layers),
            num_kv_heads=tuple(kv_heads[i] for i in layers),
            ffn_dims=tuple(ffn[i] for i in layers),
            hidden_size=hidden,
        )

    def params(self, subnet: DecoderSubnet, space: DecoderSearchSpace) -> dict[str, Any]:
        params: dict[str, Any] = {"depth": subnet.depth, "hidden_size": subnet.hidden_size}
        for i in range(space.num_layers):
            # dropped layers take the nearest kept layer's values: uniform subnets stay uniform
            nearest = min(range(subnet.depth), key=lambda k: abs(subnet.layers[k] - i))
            params[f"heads_{i}"] = subnet.heads_per_kv[nearest]
            if len(space.num_kv_heads) > 1:
                params[f"kv_heads_{i}"] = subnet.num_kv_heads[nearest]
            params[f"ffn_{i}"] = subnet.ffn_dims[nearest]
        return params

    def csv_columns(self, subnet: DecoderSubnet) -> dict[str, Any]:
        """The subnet's choices as CSV cells: tuples become space-separated numbers."""
        return {
            "depth": subnet.depth,
            "layers": " ".join(map(str, subnet.layers)),
            "heads_per_kv": " ".join(map(str, subnet.heads_per_kv)),
            "num_kv_heads": " ".join(map(str, subnet.num_kv_heads)),
            "ffn_dims": " ".join(map(str, subnet.ffn_dims)),
            "hidden_size": subnet.hidden_size,
        }
