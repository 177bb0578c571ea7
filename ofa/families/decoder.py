"""Decoder-only LMs (Llama, Qwen2, Mistral): elastic conversion, extraction, counts.

Everything specific to this architecture family lives here (with its counts and importance
units in :mod:`ofa.families.decoder_units` and the per-layer model classes in
:mod:`ofa.families.decoder_modeling`). The three architectures share one code path: the same
module names (``model.embed_tokens``, ``model.layers[i].self_attn.{q,k,v,o}_proj``,
``mlp.{gate,up,down}_proj``, ``input_layernorm``, ``post_attention_layernorm``, ``model.norm``,
``lm_head``); they differ in biases (Qwen2's q/k/v, Llama's optional ones) and masks (Mistral's
sliding window), which transformers' own forward handles.

Elastic: depth (which layers a subnet keeps), query heads per KV head and KV heads per layer
(grouped-query attention stays consistent: every KV head keeps the same number of query heads),
MLP width per layer, and the hidden width through the embeddings, every RMSNorm and the LM head
(tied embeddings stay tied). ``head_dim`` never changes, so rotary embeddings are untouched.
"""

from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn
from transformers import (
    GenerationConfig,
    LlamaForCausalLM,
    LlamaModel,
    MistralForCausalLM,
    MistralModel,
    PreTrainedModel,
    Qwen2ForCausalLM,
    Qwen2Model,
)

from ofa._choices import at_least, restrict
from ofa._metrics import language_model_scores, next_token_targets
from ofa.decoder_space import DecoderSearchSpace, DecoderSubnet
from ofa.elastic import (
    ElasticEmbedding,
    ElasticHeadOutput,
    ElasticHeadProjection,
    ElasticLayerStack,
    ElasticLinear,
    ElasticRMSNorm,
)
from ofa.families import decoder_units
from ofa.families.decoder_modeling import reshape_layer_
from ofa.groups import UnitGroup

__all__ = ["DecoderFamily", "SUPPORTED_CLASSES", "layer_shapes", "subnet_config"]

# class name -> class; the only classes a saved supernet may name (nothing is imported by name)
SUPPORTED_CLASSES: dict[str, type[PreTrainedModel]] = {
    cls.__name__: cls
    for cls in (
        LlamaModel,
        LlamaForCausalLM,
        Qwen2Model,
        Qwen2ForCausalLM,
        MistralModel,
        MistralForCausalLM,
    )
}
_GENERATION = "_ofa_generation_config"  # config_dict key of a causal LM's generation config
_PHASE_FIELDS = {"num_heads": "heads_per_kv", "ffn_dims": "ffn_dims"}


def layer_shapes(model: PreTrainedModel) -> dict[str, int]:
    """The full model's per-layer shape, read from its modules (every layer must share it)."""
    base: Any = model.base_model
    shapes = []
    for layer in base.layers._modules.values():
        attention, mlp = layer.self_attn, layer.mlp
        head_dim = int(attention.head_dim)
        shapes.append(
            {
                "num_heads": attention.q_proj.out_features // head_dim,
                "num_kv_heads": attention.k_proj.out_features // head_dim,
                "head_dim": head_dim,
                "ffn_dim": mlp.gate_proj.out_features,
            }
        )
    if any(shape != shapes[0] for shape in shapes):
        raise ValueError(
            "the decoder layers differ in shape; convert a model whose layers share one shape"
        )
    return {**shapes[0], "hidden_size": base.embed_tokens.embedding_dim}


def _layer_types(config: Any) -> list[str] | None:
    types = getattr(config, "layer_types", None)
    return None if types is None else list(types)


def subnet_config(config: Any, space: DecoderSearchSpace, subnet: DecoderSubnet) -> Any:
    """The model config of ``subnet``: the stock fields a uniform subnet fills exactly (the
    largest layer's for a per-layer one), ``head_dim`` kept, the kept layers' types."""
    config = copy.deepcopy(config)
    config.num_hidden_layers = subnet.depth
    config.hidden_size = subnet.hidden_size
    config.head_dim = space.head_dim
    config.num_attention_heads = max(subnet.num_heads)
    config.num_key_value_heads = max(subnet.num_kv_heads)
    config.intermediate_size = max(subnet.ffn_dims)
    types = _layer_types(config)
    if types is not None:
        config.layer_types = [types[i] for i in subnet.layers]
    config.ofa_subnet = subnet.to_dict()
    return config


class DecoderFamily:
    """Adapter for Llama, Qwen2 and Mistral decoders, bare or with their causal-LM head."""

    name = "decoder"
    space_type = DecoderSearchSpace
    subnet_type = DecoderSubnet
    calibrates_batch_norm = False  # RMSNorm only: a subnet runs on the supernet as it is
    supported = tuple(sorted(SUPPORTED_CLASSES))  # named in convert's refusal
    pretrained_classes = SUPPORTED_CLASSES  # what `ofa convert --model DIR` may load
    phase_dimensions = ("depths", "num_heads", "ffn_dims", "hidden_sizes")

    # ---- structure ------------------------------------------------------------------------
    @staticmethod
    def supports(model: nn.Module) -> bool:
        cls = SUPPORTED_CLASSES.get(type(model).__name__)
        return cls is not None and isinstance(model, cls)

    def check_supported(self, model: PreTrainedModel) -> None:
        layer_shapes(model)
        config = model.config
        if config.num_attention_heads % config.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {config.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {config.num_key_value_heads}: fix the model's config"
            )
        base: Any = model.base_model
        for layer in base.layers._modules.values():
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                if type(getattr(layer.self_attn, name)) is not nn.Linear:
                    raise ValueError(
                        f"self_attn.{name} is a {type(getattr(layer.self_attn, name)).__name__}, "
                        "not an nn.Linear: convert the unquantized model"
                    )

    @staticmethod
    def _mixed_layer_types(model: PreTrainedModel) -> bool:
        """Layers of different attention types (Qwen2 with some sliding-window layers): the
        model indexes ``layer_types`` by position, so its depth cannot shrink."""
        types = _layer_types(model.config)
        return types is not None and len(set(types)) > 1

    # ---- save / load ----------------------------------------------------------------------
    @staticmethod
    def config_dict(model: PreTrainedModel) -> dict[str, Any]:
        config = model.config.to_dict()
        config["_attn_implementation"] = model.config._attn_implementation
        generation = getattr(model, "generation_config", None)
        if generation is not None:
            config[_GENERATION] = generation.to_dict()
        return config

    @staticmethod
    def build_model(class_name: str, config: dict[str, Any]) -> PreTrainedModel:
        """A randomly initialised model of a supported class (nothing is imported by name)."""
        if class_name not in SUPPORTED_CLASSES:
            raise ValueError(
                f"{class_name} is not a supported decoder class: use one of "
                f"{sorted(SUPPORTED_CLASSES)}"
            )
        model_class = SUPPORTED_CLASSES[class_name]
        settings = dict(config)
        attn = settings.pop("_attn_implementation", None)
        generation = settings.pop(_GENERATION, None)
        config_class: Any = model_class.config_class
        model_config = config_class.from_dict(settings)
        if attn:
            model_config._attn_implementation = attn
        model = model_class(model_config)
        if generation is not None:
            model.generation_config = GenerationConfig.from_dict(generation)
        return model

    @staticmethod
    def space_from_dict(data: dict[str, Any]) -> DecoderSearchSpace:
        return DecoderSearchSpace.from_dict(data)

    @staticmethod
    def subnet_from_dict(data: dict[str, Any]) -> DecoderSubnet:
        return DecoderSubnet.from_dict(data)

    # ---- conversion -----------------------------------------------------------------------
    def default_space(self, model: PreTrainedModel) -> DecoderSearchSpace:
        shape = layer_shapes(model)
        return DecoderSearchSpace.default(
            num_layers=len(model.base_model.layers),  # type: ignore[arg-type]
            max_num_kv_heads=shape["num_kv_heads"],
            max_heads_per_kv=shape["num_heads"] // shape["num_kv_heads"],
            head_dim=shape["head_dim"],
            max_ffn_dim=shape["ffn_dim"],
            max_hidden_size=shape["hidden_size"],
            elastic_depth=not self._mixed_layer_types(model),
        )

    def check_space(self, model: PreTrainedModel, space: DecoderSearchSpace) -> None:
        shape = layer_shapes(model)
        expected = {
            "num_layers": len(model.base_model.layers),  # type: ignore[arg-type]
            "max_num_kv_heads": shape["num_kv_heads"],
            "max_heads_per_kv": shape["num_heads"] // shape["num_kv_heads"],
            "head_dim": shape["head_dim"],
            "max_ffn_dim": shape["ffn_dim"],
            "max_hidden_size": shape["hidden_size"],
        }
        wrong = {k: (getattr(space, k), v) for k, v in expected.items() if getattr(space, k) != v}
        if wrong:
            detail = ", ".join(
                f"{k}={got} but the model has {want}" for k, (got, want) in wrong.items()
            )
            raise ValueError(f"search space does not fit the model: {detail}")
        if self._mixed_layer_types(model) and space.depths != (space.num_layers,):
            raise ValueError(
                "this model mixes full and sliding-window attention layers, which transformers "
                f"assigns by position: give depths=({space.num_layers},) (depth cannot shrink)"
            )

    def make_elastic_(self, model: PreTrainedModel) -> None:
        """Swap every sliceable module for its elastic subclass, sharing the parameters."""
        base: Any = model.base_model
        shape = layer_shapes(model)
        kv_heads, head_dim = shape["num_kv_heads"], shape["head_dim"]
        grid = (kv_heads, shape["num_heads"] // kv_heads)
        base.embed_tokens = ElasticEmbedding.from_dense(base.embed_tokens)
        for layer in base.layers._modules.values():
            attention, mlp = layer.self_attn, layer.mlp
            attention.q_proj = ElasticHeadProjection.from_dense(
                attention.q_proj, grid=grid, head_dim=head_dim
            )
            for name in ("k_proj", "v_proj"):
                projection = ElasticHeadProjection.from_dense(
                    getattr(attention, name), grid=(kv_heads,), head_dim=head_dim
                )
                setattr(attention, name, projection)
            attention.o_proj = ElasticHeadOutput.from_dense(
                attention.o_proj, grid=grid, head_dim=head_dim
            )
            for name in ("gate_proj", "up_proj", "down_proj"):
                setattr(mlp, name, ElasticLinear.from_dense(getattr(mlp, name)))
            for name in ("input_layernorm", "post_attention_layernorm"):
                setattr(layer, name, ElasticRMSNorm.from_dense(getattr(layer, name)))
        base.norm = ElasticRMSNorm.from_dense(base.norm)
        base.layers = ElasticLayerStack.from_dense(base.layers)
        if isinstance(getattr(model, "lm_head", None), nn.Linear):
            model.lm_head = ElasticLinear.from_dense(model.lm_head)  # tied: the same Parameter

    def set_subnet_(
        self, model: PreTrainedModel, space: DecoderSearchSpace, subnet: DecoderSubnet
    ) -> None:
        base: Any = model.base_model
        hidden = subnet.hidden_size
        base.embed_tokens.active_embedding_dim = hidden
        base.layers.active_indices = None if subnet.depth == space.num_layers else subnet.layers
        shapes = zip(subnet.layers, subnet.heads_per_kv, subnet.num_kv_heads, subnet.ffn_dims)
        for position, (index, heads_per_kv, kv_heads, ffn_dim) in enumerate(shapes):
            layer = base.layers[index]
            attention, mlp = layer.self_attn, layer.mlp
            attention.q_proj.active_grid = attention.o_proj.active_grid = (kv_heads, heads_per_kv)
            attention.k_proj.active_grid = attention.v_proj.active_grid = (kv_heads,)
            attention.o_proj.active_out_features = hidden
            attention.num_key_value_groups = heads_per_kv  # repeat_kv / sdpa read it
            attention.layer_idx = position  # the KV cache holds the kept layers in order
            mlp.gate_proj.active_out_features = mlp.up_proj.active_out_features = ffn_dim
            mlp.down_proj.active_out_features = hidden

    # ---- extraction -----------------------------------------------------------------------
    def extract(
        self, model: PreTrainedModel, space: DecoderSearchSpace, subnet: DecoderSubnet
    ) -> PreTrainedModel:
        """A plain transformers model of the same class holding the subnet's weights (stock
        layers reshaped per layer where the subnet's layers differ)."""
        reference = next(model.parameters())
        small: Any = type(model)(subnet_config(model.config, space, subnet))
        small.to(dtype=reference.dtype, device=reference.device)
        layers = small.base_model.layers
        shapes = zip(layers, subnet.num_heads, subnet.num_kv_heads, subnet.ffn_dims)
        for layer, heads, kv_heads, ffn_dim in shapes:
            reshape_layer_(
                layer,
                hidden_size=subnet.hidden_size,
                num_heads=heads,
                num_kv_heads=kv_heads,
                head_dim=space.head_dim,
                ffn_dim=ffn_dim,
            )
        small.load_state_dict(self._sliced_state(model, small, subnet), strict=True)
        if getattr(model, "generation_config", None) is not None:
            small.generation_config = copy.deepcopy(model.generation_config)
        small.train(model.training)
        return small

    def _sliced_state(
        self, model: PreTrainedModel, small: PreTrainedModel, subnet: DecoderSubnet
    ) -> dict[str, torch.Tensor]:
        modules = dict(model.named_modules())
        layer_key = decoder_units.prefix(model) + "layers."
        state = {}
        with torch.no_grad():
            for key, target in small.state_dict().items():
                path, _, name = key.rpartition(".")
                position = -1
                if path.startswith(layer_key):
                    index, _, rest = path[len(layer_key) :].partition(".")
                    position = int(index)
                    path = f"{layer_key}{subnet.layers[position]}.{rest}"
                source = modules[path]
                if isinstance(source, (ElasticHeadProjection, ElasticHeadOutput)):
                    kv_heads = subnet.num_kv_heads[position]
                    grid = (kv_heads, subnet.heads_per_kv[position])[: len(source.grid)]
                    # q/k/v read, o writes, the hidden width
                    tensor = source.part(grid, subnet.hidden_size)[0 if name == "weight" else 1]
                else:
                    tensor = getattr(source, name)
                lead = tuple(slice(0, n) for n in target.shape)
                state[key] = tensor[lead].clone()  # type: ignore[index]
        return state

    # ---- counts and importance units (decoder_units) ---------------------------------------
    def num_params(
        self, model: PreTrainedModel, space: DecoderSearchSpace, subnet: DecoderSubnet
    ) -> int:
        return decoder_units.num_params(model, space, subnet)

    def flops(
        self,
        model: PreTrainedModel,
        space: DecoderSearchSpace,
        subnet: DecoderSubnet,
        *,
        batch_size: int,
        seq_len: int,
    ) -> int:
        """Matrix-multiply FLOPs (2 per multiply-add) of one forward pass over every position,
        as FlopCounterMode counts them under eager attention."""
        return decoder_units.flops(
            model, space, subnet, batch_size=batch_size, seq_len=seq_len, logits=seq_len
        )

    def unit_groups(self, model: PreTrainedModel, space: DecoderSearchSpace) -> list[UnitGroup]:
        return decoder_units.unit_groups(model, space)

    def hidden_is_internal(self, model: PreTrainedModel) -> bool:
        """True for a causal LM: its head reads the hidden channels, no output exposes them."""
        return isinstance(getattr(model, "lm_head", None), nn.Linear)

    # ---- training -------------------------------------------------------------------------
    @staticmethod
    def check_train_data(train_data: Any, hidden_weight: float, theseus: bool) -> None:
        """Refuse data a causal LM cannot train on: it takes token blocks (input_ids, no
        labels; the next tokens are the targets)."""
        import datasets

        if not isinstance(train_data, datasets.Dataset) or "input_ids" not in (
            train_data.column_names
        ):
            raise ValueError(
                "a decoder supernet trains on token blocks: a datasets.Dataset with input_ids "
                "(see ofa.data_text.load_text_blocks)"
            )
        if "labels" in train_data.column_names:
            raise ValueError(
                "the training data has a 'labels' column: a decoder supernet learns the next "
                "token of text blocks (ofa.data_text.load_text_blocks), not one label per row"
            )
        if theseus:
            raise ValueError("BERT-of-Theseus is for BERT-family supernets: use theseus=None")

    # a subnet is a causal LM: per-token losses, next-token accuracy, perplexity
    language_model = True

    @staticmethod
    def loss_inputs(
        student: Any, teacher: Any, labels: Any, inputs: dict[str, Tensor]
    ) -> tuple[Any, Any, Tensor]:
        """Per-token targets: each position's logits against the next token (hard labels) and
        the teacher's logits at that position (the KL with temperature is then per token);
        hidden states are passed through whole."""
        ids, mask = inputs["input_ids"], inputs.get("attention_mask")

        if getattr(student, "logits", None) is None:
            raise ValueError(
                "a bare decoder has no LM head to distil: convert and train the ...ForCausalLM "
                "(e.g. LlamaForCausalLM), then export its base model if you need it bare"
            )

        def per_token(out: Any) -> Any:
            logits, targets = next_token_targets(out.logits, ids, mask)
            return SimpleNamespace(
                logits=logits, hidden_states=getattr(out, "hidden_states", None)
            ), targets

        student_view, targets = per_token(student)
        teacher_view = None if teacher is None else per_token(teacher)[0]
        return student_view, teacher_view, targets

    @staticmethod
    def score(model: nn.Module, data: Any, batch_size: int) -> float:
        """Next-token accuracy on token blocks (higher is better; see ofa.perplexity)."""
        return language_model_scores(model, data, batch_size=batch_size).accuracy

    def phase_space(self, phase: Any, space: DecoderSearchSpace) -> DecoderSearchSpace:
        """The choices of ``space`` a training ``phase`` samples from: its ``num_heads`` rule
        restricts the query heads per KV head, and the KV heads too when it is a word ("max",
        "large", "all"); a tuple of values keeps the KV heads at their largest."""
        phase.check_dimensions(self.phase_dimensions, "a decoder")
        changes: dict[str, tuple[int, ...]] = {}
        for name in self.phase_dimensions:
            field = _PHASE_FIELDS.get(name, name)
            choices = restrict(getattr(space, field), getattr(phase, name), name)
            if field in ("heads_per_kv", "ffn_dims"):
                choices = at_least(choices, phase.min_width * getattr(space, field)[-1])
            changes[field] = choices
        rule = phase.num_heads
        kv_rule = rule if isinstance(rule, str) else "max"
        changes["num_kv_heads"] = restrict(space.num_kv_heads, kv_rule, "num_kv_heads")
        return dataclasses.replace(space, **changes)  # type: ignore[arg-type]

    @staticmethod
    def contains(big: DecoderSubnet, small: DecoderSubnet) -> bool:
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

    def multiplier_subnets(self, phase: Any, space: DecoderSearchSpace) -> list[DecoderSubnet]:
        """One uniform subnet per width multiplier: query heads per KV head and MLP width at
        that fraction of the largest; every KV head, the phase's largest depth and hidden."""
        part = self.phase_space(phase, space)

        def at(fraction: float, field: str) -> int:
            return at_least(getattr(part, field), fraction * getattr(space, field)[-1])[0]

        return [
            part.uniform(
                depth=part.depths[-1],
                heads_per_kv=at(m, "heads_per_kv"),
                num_kv_heads=part.num_kv_heads[-1],
                ffn_dim=at(m, "ffn_dims"),
                hidden_size=part.hidden_sizes[-1],
            )
            for m in phase.width_multipliers
        ]
