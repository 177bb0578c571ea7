"""The search's adapter of the BERT-family encoders: token inputs, one latency-table entry per
(heads, FFN width, hidden width) layer, Optuna parameters per layer."""

from __future__ import annotations

from typing import Any

import optuna

from ofa.families.bert import BertFamily
from ofa.space import SearchSpace, Subnet
from ofa.supernet import Supernet
from search._profile import layer_table
from search.latency import Inputs, LatencyTarget, example_inputs

__all__ = ["BertLatency"]

TableKey = tuple[Any, ...]


class BertLatency:
    """BERT-family encoders: token inputs; one table entry per (heads, FFN, hidden) layer."""

    name = "bert"

    def resolve_target(self, supernet: Supernet, target: LatencyTarget) -> LatencyTarget:
        if target.image_size is not None:
            raise ValueError(
                "image_size is for CNN supernets; a BERT-family target takes seq_len instead"
            )
        if target.phase != "prefill":
            raise ValueError(
                f"phase {target.phase!r} is for causal LMs; an encoder runs the whole sequence "
                "at once (leave the phase at prefill)"
            )
        return target

    def inputs(self, supernet: Supernet, target: LatencyTarget) -> Inputs:
        return example_inputs(
            batch_size=target.batch_size,
            seq_len=target.seq_len,
            vocab_size=int(supernet.config.vocab_size),
        )

    def flops(self, supernet: Supernet, subnet: Subnet, target: LatencyTarget) -> int:
        return supernet.flops(subnet, batch_size=target.batch_size, seq_len=target.seq_len)

    def make_plan(self, supernet: Supernet, target: LatencyTarget) -> None:
        return None  # the subnet alone says everything

    def plan_to_json(self, plan: None) -> None:
        return None

    def plan_from_json(self, data: Any) -> None:
        return None

    def table_keys(self, plan: None, subnet: Subnet) -> list[TableKey]:
        return [(h, f, subnet.hidden_size) for h, f in zip(subnet.num_heads, subnet.ffn_dims)]

    def calibration_group(self, subnet: Subnet) -> int:
        return subnet.hidden_size  # embeddings and pooler scale with the hidden width

    def features(self, plan: None, subnet: Subnet) -> list[float]:
        """FLOP-like terms of a subnet at a fixed input shape (the shape scales every term)."""
        d = subnet.hidden_size
        heads, ffn = subnet.num_heads, subnet.ffn_dims
        return [
            float(sum(h * d for h in heads)),  # Q, K, V, O projections
            float(sum(heads)),  # attention scores and softmax (T x T per head)
            float(sum(f * d for f in ffn)),  # FFN matmuls
            float(sum(ffn)),  # GELU
            float(subnet.depth * d),  # LayerNorms, residual adds
            float(subnet.depth),  # per-layer launch overhead
            float(d),  # embeddings, pooler
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
        return dict(layer_table(supernet, target, warmup=warmup, rounds=rounds, progress=progress))

    def uniform_subnets(self, space: SearchSpace) -> list[Subnet]:
        return space.uniform_subnets()

    contains = staticmethod(BertFamily.contains)

    def owns(self, space_or_subnet: Any) -> bool:
        return isinstance(space_or_subnet, (SearchSpace, Subnet))

    def complete_target(self, space: SearchSpace, target: LatencyTarget) -> LatencyTarget:
        return target

    def suggest(self, trial: optuna.trial.Trial, space: SearchSpace) -> Subnet:
        """Depth, hidden width, and heads and FFN width of every layer. Every layer's widths
        are suggested whatever the depth, so the parameter space is fixed (which NSGA-II and
        multivariate TPE need); a layer the depth drops ignores its values."""
        depth = trial.suggest_categorical("depth", list(space.depths))
        hidden = trial.suggest_categorical("hidden_size", list(space.hidden_sizes))
        heads = [
            trial.suggest_categorical(f"heads_{i}", list(space.num_heads))
            for i in range(space.num_layers)
        ]
        ffn = [
            trial.suggest_categorical(f"ffn_{i}", list(space.ffn_dims))
            for i in range(space.num_layers)
        ]
        layers = space.layers_for(int(depth))
        return Subnet(
            layers=layers,
            num_heads=tuple(int(heads[i]) for i in layers),
            ffn_dims=tuple(int(ffn[i]) for i in layers),
            hidden_size=int(hidden),
        )

    def params(self, subnet: Subnet, space: SearchSpace) -> dict[str, Any]:
        params: dict[str, Any] = {"depth": subnet.depth, "hidden_size": subnet.hidden_size}
        for i in range(space.num_layers):
            # dropped layers take the nearest kept layer's widths: uniform subnets stay uniform
            nearest = min(range(subnet.depth), key=lambda k: abs(subnet.layers[k] - i))
            params[f"heads_{i}"] = subnet.num_heads[nearest]
            params[f"ffn_{i}"] = subnet.ffn_dims[nearest]
        return params

    csv_names = ("depth", "layers", "num_heads", "ffn_dims", "hidden_size")

    def csv_columns(self, subnet: Subnet) -> dict[str, Any]:
        """The subnet's choices as CSV cells: tuples become space-separated numbers."""
        return {
            "depth": subnet.depth,
            "layers": " ".join(map(str, subnet.layers)),
            "num_heads": " ".join(map(str, subnet.num_heads)),
            "ffn_dims": " ".join(map(str, subnet.ffn_dims)),
            "hidden_size": subnet.hidden_size,
        }
