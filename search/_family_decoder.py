"""The search's adapter of decoder-only LMs: prefill latency of prompts of the target's length,
or decode latency of one token at that context; one latency-table entry per (query heads per
KV head, KV heads, MLP width, hidden width) layer, Optuna parameters per layer.

A causal LM is timed as ``generate`` runs it. Prefill (``target.phase``): the whole prompt
through every layer, the LM head on the last position only (``logits_to_keep``), the KV cache
filled. Decode: one new token per sequence against a KV cache that already holds ``seq_len``
tokens (filled once, untimed; the new entry is cropped off after each timed step, so every step
sees the same context), the LM head on that token.
"""

from __future__ import annotations

import copy
from typing import Any

import optuna
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import DynamicCache

from ofa.decoder_space import DecoderSearchSpace, DecoderSubnet
from ofa.families.decoder import DecoderFamily
from ofa.families.decoder_modeling import reshape_layer_
from ofa.families.decoder_units import flops as decoder_flops
from ofa.supernet import Supernet
from search.latency import BoundInputs, Inputs, LatencyTarget, example_inputs, measure_latency

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


class _DecodeStep(BoundInputs):
    """One generated token per sequence at a context of ``seq_len`` tokens in the KV cache."""

    def __init__(self, *, batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> None:
        self.batch_size, self.seq_len = batch_size, seq_len
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(vocab_size, (batch_size, seq_len + 1), generator=generator)

    def bind(self, model: nn.Module, device: torch.device, dtype: torch.dtype) -> Any:
        ids = self.ids.to(device)
        cache = DynamicCache()
        with torch.inference_mode():  # the context, filled once and not timed
            model(input_ids=ids[:, :-1], cache=cache, use_cache=True, logits_to_keep=1)
        token = ids[:, -1:]
        positions = torch.full((self.batch_size, 1), self.seq_len, device=device)

        def step() -> Any:
            out = model(
                input_ids=token, position_ids=positions, cache=cache, use_cache=True,
                logits_to_keep=1,
            )  # fmt: skip
            cache.crop(-1)  # back to the context: every step sees seq_len tokens
            return out

        return step


class _DecodeLayer(nn.Module):
    """One decoder layer decoding one token against a cache of ``context`` positions."""

    def __init__(self, layer: nn.Module, rotary: nn.Module, context: int) -> None:
        super().__init__()
        self.layer, self.rotary, self.context = layer, rotary, context
        self.cache: DynamicCache | None = None

    def _run(self, hidden_states: torch.Tensor, start: int) -> Any:
        length = hidden_states.shape[1]
        positions = torch.arange(start, start + length, device=hidden_states.device)[None]
        return self.layer(
            hidden_states,
            attention_mask=None,
            position_embeddings=self.rotary(hidden_states, positions),
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
        )

    def forward(self, hidden_states: torch.Tensor) -> Any:
        if self.cache is None:  # the first call (a warm-up) fills the context
            self.cache = DynamicCache()
            batch, _, width = hidden_states.shape
            self._run(hidden_states.new_zeros(batch, self.context, width), 0)
        out = self._run(hidden_states, self.context)
        self.cache.crop(-1)
        return out


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
        if target.phase == "decode" and not _causal(supernet):
            raise ValueError(
                "decode latency needs a causal LM (a model with an LM head): convert the "
                "*ForCausalLM model, or time the prefill"
            )
        return target

    def complete_target(self, space: DecoderSearchSpace, target: LatencyTarget) -> LatencyTarget:
        return target

    def inputs(self, supernet: Supernet, target: LatencyTarget) -> Inputs:
        if target.phase == "decode":
            return _DecodeStep(
                batch_size=target.batch_size,
                seq_len=target.seq_len,
                vocab_size=int(supernet.config.vocab_size),
            )
        inputs = example_inputs(
            batch_size=target.batch_size,
            seq_len=target.seq_len,
            vocab_size=int(supernet.config.vocab_size),
        )
        if _causal(supernet):  # the prefill's logits: the last position only
            inputs["logits_to_keep"] = torch.tensor([target.seq_len - 1])
        return inputs

    def flops(self, supernet: Supernet, subnet: DecoderSubnet, target: LatencyTarget) -> int:
        """FLOPs of the timed prefill or decode step (the LM head on one position)."""
        decode = target.phase == "decode"
        return decoder_flops(
            supernet.model,
            supernet.space,  # type: ignore[arg-type]
            subnet,
            batch_size=target.batch_size,
            seq_len=1 if decode else target.seq_len,
            logits=1,
            context=target.seq_len if decode else 0,
        )

    # ---- the latency table and the fitted predictor ---------------------------------------
    def make_plan(self, supernet: Supernet, target: LatencyTarget) -> str | None:
        # the subnet says everything but what is timed: a decode step also reads the KV cache
        return "decode" if target.phase == "decode" else None

    def plan_to_json(self, plan: str | None) -> str | None:
        return plan

    def plan_from_json(self, data: Any) -> str | None:
        return None if data is None else str(data)

    def table_keys(self, plan: str | None, subnet: DecoderSubnet) -> list[TableKey]:
        shapes = zip(subnet.heads_per_kv, subnet.num_kv_heads, subnet.ffn_dims)
        return [(g, k, f, subnet.hidden_size) for g, k, f in shapes]

    def calibration_group(self, subnet: DecoderSubnet) -> int:
        return subnet.hidden_size  # embeddings, final norm and LM head scale with it

    def features(self, plan: str | None, subnet: DecoderSubnet) -> list[float]:
        """FLOP-like terms of a subnet at a fixed prompt shape (the shape scales every term);
        for a decode step, also the KV cache it reads (context x KV heads)."""
        d = subnet.hidden_size
        heads, kv_heads, ffn = subnet.num_heads, subnet.num_kv_heads, subnet.ffn_dims
        cache = [float(sum(kv_heads))] if plan == "decode" else []
        return cache + [
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
        plan: str | None,
        *,
        warmup: int,
        rounds: int,
        progress: bool,
    ) -> dict[TableKey, float]:
        """Latency of one decoder layer for every shape the space allows, in isolation: on a
        prompt of ``seq_len`` tokens, or decoding one token against that context."""
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
            decode = target.phase == "decode"
            runner = (
                _DecodeLayer(layer, rotary, target.seq_len)
                if decode
                else _LayerRunner(layer, rotary)
            )
            result = measure_latency(
                runner.eval(),
                torch.randn(target.batch_size, 1 if decode else target.seq_len, d),
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

    contains = staticmethod(DecoderFamily.contains)

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
