"""BERT-family encoders (BERT, RoBERTa, ELECTRA): elastic conversion, extraction, counts.

Everything specific to this architecture family lives here. The three families share one
code path: their modules have the same names (``embeddings``, ``encoder.layer[i].attention``,
``intermediate``, ``output``), and only the task head and ELECTRA's embedding projection differ.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

import torch
from torch import nn
from transformers import (
    BertForSequenceClassification,
    BertModel,
    ElectraForSequenceClassification,
    ElectraModel,
    PreTrainedModel,
    RobertaForSequenceClassification,
    RobertaModel,
    XLMRobertaForSequenceClassification,
    XLMRobertaModel,
)

from ofa._choices import at_least, restrict
from ofa.elastic import ElasticEmbedding, ElasticLayerNorm, ElasticLinear, ElasticModuleList
from ofa.families._classifier import ClassifierHooks
from ofa.groups import UnitGroup
from ofa.space import SearchSpace, Subnet

logger = logging.getLogger(__name__)

__all__ = ["BertFamily", "SUPPORTED_CLASSES"]

# class name -> class; the only classes a saved supernet may name (nothing is imported by name)
SUPPORTED_CLASSES: dict[str, type[PreTrainedModel]] = {
    cls.__name__: cls
    for cls in (
        BertModel,
        BertForSequenceClassification,
        RobertaModel,
        RobertaForSequenceClassification,
        XLMRobertaModel,
        XLMRobertaForSequenceClassification,
        ElectraModel,
        ElectraForSequenceClassification,
    )
}
_LAYER_LINEARS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
_LAYER_NORMS = ("attention.output.LayerNorm", "output.LayerNorm")
_EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings")


def _get(module: nn.Module, path: str) -> Any:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _set(module: nn.Module, path: str, value: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(_get(module, parent) if parent else module, name, value)


class BertFamily(ClassifierHooks):
    """Adapter for BERT-shaped encoders and their sequence-classification models."""

    name = "bert"
    space_type = SearchSpace
    subnet_type = Subnet
    calibrates_batch_norm = False  # LayerNorm only: a subnet runs on the supernet as it is
    supported = tuple(sorted(SUPPORTED_CLASSES))  # named in convert's refusal
    pretrained_classes = SUPPORTED_CLASSES  # what `ofa convert --model DIR` may load
    phase_dimensions = ("depths", "num_heads", "ffn_dims", "hidden_sizes")

    def phase_space(self, phase: Any, space: SearchSpace) -> SearchSpace:
        """The choices of ``space`` that training ``phase`` samples from, per dimension."""
        phase.check_dimensions(self.phase_dimensions, "a BERT-family")

        def pick(name: str) -> tuple[int, ...]:
            choices = restrict(getattr(space, name), getattr(phase, name), name)
            if name in ("num_heads", "ffn_dims"):
                return at_least(choices, phase.min_width * getattr(space, name)[-1])
            return choices

        return dataclasses.replace(space, **{name: pick(name) for name in self.phase_dimensions})

    @staticmethod
    def contains(big: Subnet, small: Subnet) -> bool:
        """Layer by layer (in kept order): fewer layers, no more heads or FFN width in each,
        no wider residual stream. Latency does not depend on which layer index is kept."""
        if small.depth > big.depth or small.hidden_size > big.hidden_size:
            return False
        return all(
            hs <= hb and fs <= fb
            for hs, hb, fs, fb in zip(small.num_heads, big.num_heads, small.ffn_dims, big.ffn_dims)
        )

    def multiplier_subnets(self, phase: Any, space: SearchSpace) -> list[Subnet]:
        """One uniform subnet per width multiplier: heads and FFN at that fraction of the max."""
        part = self.phase_space(phase, space)

        def at(fraction: float, name: str) -> int:
            return at_least(getattr(part, name), fraction * getattr(space, name)[-1])[0]

        return [
            part.uniform(
                depth=part.depths[-1],
                num_heads=at(m, "num_heads"),
                ffn_dim=at(m, "ffn_dims"),
                hidden_size=part.hidden_sizes[-1],
            )
            for m in phase.width_multipliers
        ]

    @staticmethod
    def check_train_data(train_data: Any, hidden_weight: float, theseus: bool) -> None:
        """Refuse training data a BERT-family supernet cannot train on."""
        import datasets

        if not isinstance(train_data, datasets.Dataset) or "input_ids" not in (
            train_data.column_names
        ):
            raise ValueError(
                "train_data must be a tokenized datasets.Dataset (see ofa.data.tokenize)"
            )

    # ---- structure ------------------------------------------------------------------------
    @staticmethod
    def supports(model: nn.Module) -> bool:
        return type(model).__name__ in SUPPORTED_CLASSES and isinstance(
            model, SUPPORTED_CLASSES[type(model).__name__]
        )

    @staticmethod
    def _prefix(model: PreTrainedModel) -> str:
        return "" if model.base_model is model else model.base_model_prefix + "."

    @staticmethod
    def _project(model: PreTrainedModel) -> nn.Linear | None:
        return getattr(model.base_model, "embeddings_project", None)

    def _hidden_linears(self, model: PreTrainedModel) -> list[str]:
        """Linears outside the encoder whose output is the residual width (pooler, head)."""
        names = []
        if getattr(model.base_model, "pooler", None) is not None:
            names.append(self._prefix(model) + "pooler.dense")
        if isinstance(getattr(model, "classifier", None), nn.Module) and hasattr(
            model.classifier, "dense"
        ):
            names.append("classifier.dense")
        if self._project(model) is not None:
            names.append(self._prefix(model) + "embeddings_project")
        return names

    @staticmethod
    def _fixed_linears(model: PreTrainedModel) -> list[str]:
        """Linears whose output (the labels) never shrinks."""
        head = getattr(model, "classifier", None)
        if isinstance(head, nn.Linear):
            return ["classifier"]
        if head is not None:
            return ["classifier.out_proj"]
        return []

    def check_supported(self, model: PreTrainedModel) -> None:
        config = model.config
        if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
            raise ValueError(
                "decoder or cross-attention BERT models are not supported: convert an encoder "
                "(is_decoder=False, add_cross_attention=False)"
            )
        if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
            raise ValueError("only absolute position embeddings are supported")

    # ---- save / load ----------------------------------------------------------------------
    @staticmethod
    def config_dict(model: PreTrainedModel) -> dict[str, Any]:
        config = model.config.to_dict()
        config["_attn_implementation"] = model.config._attn_implementation
        return config

    @staticmethod
    def build_model(class_name: str, config: dict[str, Any]) -> PreTrainedModel:
        """A randomly initialised model of a supported class (nothing is imported by name)."""
        if class_name not in SUPPORTED_CLASSES:
            raise ValueError(f"{class_name} is not a supported model class")
        model_class = SUPPORTED_CLASSES[class_name]
        settings = dict(config)
        attn = settings.pop("_attn_implementation", None)
        model_config = model_class.config_class.from_dict(settings)
        if attn:
            model_config._attn_implementation = attn
        return model_class(model_config)

    @staticmethod
    def space_from_dict(data: dict[str, Any]) -> SearchSpace:
        return SearchSpace.from_dict(data)

    @staticmethod
    def subnet_from_dict(data: dict[str, Any]) -> Subnet:
        return Subnet.from_dict(data)

    # ---- conversion -----------------------------------------------------------------------
    def default_space(self, model: PreTrainedModel) -> SearchSpace:
        config = model.config
        heads = config.num_attention_heads
        return SearchSpace.default(
            num_layers=config.num_hidden_layers,
            max_num_heads=heads,
            head_dim=config.hidden_size // heads,
            max_ffn_dim=config.intermediate_size,
            max_hidden_size=config.hidden_size,
        )

    def check_space(self, model: PreTrainedModel, space: SearchSpace) -> None:
        config = model.config
        expected = {
            "num_layers": config.num_hidden_layers,
            "max_num_heads": config.num_attention_heads,
            "head_dim": config.hidden_size // config.num_attention_heads,
            "max_ffn_dim": config.intermediate_size,
            "max_hidden_size": config.hidden_size,
        }
        wrong = {k: (getattr(space, k), v) for k, v in expected.items() if getattr(space, k) != v}
        if wrong:
            detail = ", ".join(
                f"{k}={got} but the model has {want}" for k, (got, want) in wrong.items()
            )
            raise ValueError(f"search space does not fit the model: {detail}")

    def make_elastic_(self, model: PreTrainedModel) -> None:
        """Swap every sliceable module for its elastic subclass, sharing the parameters."""
        base = model.base_model
        if self._project(model) is None:
            for name in _EMBEDDINGS:
                _set(
                    base.embeddings, name, ElasticEmbedding.from_dense(_get(base.embeddings, name))
                )
        base.embeddings.LayerNorm = ElasticLayerNorm.from_dense(base.embeddings.LayerNorm)
        for layer in base.encoder.layer:
            for path in _LAYER_LINEARS:
                _set(layer, path, ElasticLinear.from_dense(_get(layer, path)))
            for path in _LAYER_NORMS:
                _set(layer, path, ElasticLayerNorm.from_dense(_get(layer, path)))
        base.encoder.layer = ElasticModuleList.from_dense(base.encoder.layer)
        for path in self._hidden_linears(model) + self._fixed_linears(model):
            _set(model, path, ElasticLinear.from_dense(_get(model, path)))

    def set_subnet_(self, model: PreTrainedModel, space: SearchSpace, subnet: Subnet) -> None:
        base = model.base_model
        hidden = subnet.hidden_size
        if self._project(model) is None:
            for name in _EMBEDDINGS:
                _get(base.embeddings, name).active_embedding_dim = hidden
        for path in self._hidden_linears(model):
            _get(model, path).active_out_features = hidden
        base.encoder.layer.active_indices = (
            None if subnet.depth == space.num_layers else subnet.layers
        )
        for index, heads, ffn_dim in zip(subnet.layers, subnet.num_heads, subnet.ffn_dims):
            layer = base.encoder.layer[index]
            for name in ("query", "key", "value"):
                getattr(layer.attention.self, name).active_out_features = heads * space.head_dim
            layer.attention.output.dense.active_out_features = hidden
            layer.intermediate.dense.active_out_features = ffn_dim
            layer.output.dense.active_out_features = hidden

    # ---- extraction -----------------------------------------------------------------------
    def extract(
        self, model: PreTrainedModel, space: SearchSpace, subnet: Subnet
    ) -> PreTrainedModel:
        """A plain transformers model of the same class holding the subnet's weights."""
        hidden, head_dim = subnet.hidden_size, space.head_dim
        config = copy.deepcopy(model.config)
        config.num_hidden_layers = subnet.depth
        config.hidden_size = hidden
        config.num_attention_heads = hidden // head_dim
        config.intermediate_size = max(subnet.ffn_dims)
        if self._project(model) is None and hasattr(config, "embedding_size"):
            config.embedding_size = hidden
        config.ofa_subnet = subnet.to_dict()
        reference = next(model.parameters())
        small = type(model)(config).to(dtype=reference.dtype, device=reference.device)
        project = self._project(model)
        if project is not None and self._project(small) is None:
            # ELECTRA builds no projection when embedding_size == hidden_size; the subnet has one
            small.base_model.embeddings_project = nn.Linear(project.in_features, hidden)
        for layer, heads, ffn_dim in zip(
            small.base_model.encoder.layer, subnet.num_heads, subnet.ffn_dims
        ):
            reshape_layer_(
                layer, hidden=hidden, num_heads=heads, head_dim=head_dim, ffn_dim=ffn_dim
            )
        small.to(dtype=reference.dtype, device=reference.device)
        small.load_state_dict(self._sliced_state(model, small, subnet), strict=True)
        small.train(model.training)
        return small

    def _sliced_state(
        self, model: PreTrainedModel, small: PreTrainedModel, subnet: Subnet
    ) -> dict[str, torch.Tensor]:
        source = model.state_dict()
        layer_key = self._prefix(model) + "encoder.layer."
        state = {}
        for key, target in small.state_dict().items():
            source_key = key
            if key.startswith(layer_key):
                index, _, rest = key[len(layer_key) :].partition(".")
                source_key = f"{layer_key}{subnet.layers[int(index)]}.{rest}"
            tensor = source[source_key]
            state[key] = tensor[tuple(slice(0, n) for n in target.shape)].clone()
        return state

    # ---- counts ---------------------------------------------------------------------------
    def num_params(self, model: PreTrainedModel, space: SearchSpace, subnet: Subnet) -> int:
        base = model.base_model
        hidden, head_dim = subnet.hidden_size, space.head_dim
        project = self._project(model)
        if project is None:
            embedding_rows = sum(_get(base.embeddings, n).num_embeddings for n in _EMBEDDINGS)
            total = embedding_rows * hidden + 2 * hidden
        else:
            width = project.in_features
            embedding_rows = sum(_get(base.embeddings, n).num_embeddings for n in _EMBEDDINGS)
            total = embedding_rows * width + 2 * width + width * hidden + hidden
        for heads, ffn_dim in zip(subnet.num_heads, subnet.ffn_dims):
            attn = heads * head_dim
            total += 3 * (hidden * attn + attn) + attn * hidden + hidden + 2 * hidden
            total += hidden * ffn_dim + ffn_dim + ffn_dim * hidden + hidden + 2 * hidden
        if getattr(base, "pooler", None) is not None:
            total += hidden * hidden + hidden
        if isinstance(getattr(model, "classifier", None), nn.Module):
            if hasattr(model.classifier, "dense"):
                total += hidden * hidden + hidden
            labels = _get(model, self._fixed_linears(model)[0]).out_features
            total += hidden * labels + labels
        return total

    def flops(
        self,
        model: PreTrainedModel,
        space: SearchSpace,
        subnet: Subnet,
        *,
        batch_size: int,
        seq_len: int,
    ) -> int:
        """Matrix-multiply FLOPs (2 per multiply-add) of one forward pass, as FlopCounterMode counts."""
        tokens = batch_size * seq_len
        hidden, head_dim = subnet.hidden_size, space.head_dim
        total = 0
        project = self._project(model)
        if project is not None:
            total += 2 * tokens * project.in_features * hidden
        for heads, ffn_dim in zip(subnet.num_heads, subnet.ffn_dims):
            attn = heads * head_dim
            total += 2 * tokens * hidden * attn * 4  # Q, K, V and the output projection
            total += 2 * 2 * batch_size * heads * seq_len * seq_len * head_dim  # QK^T and AV
            total += 2 * 2 * tokens * hidden * ffn_dim
        if getattr(model.base_model, "pooler", None) is not None:
            total += 2 * batch_size * hidden * hidden
        if isinstance(getattr(model, "classifier", None), nn.Module):
            if hasattr(model.classifier, "dense"):
                total += 2 * batch_size * hidden * hidden
            labels = _get(model, self._fixed_linears(model)[0]).out_features
            total += 2 * batch_size * hidden * labels
        return total

    # ---- coupled units --------------------------------------------------------------------
    def unit_groups(self, model: PreTrainedModel, space: SearchSpace) -> list[UnitGroup]:
        """Heads and FFN neurons of every layer, and the hidden channels of the residual stream."""
        prefix = self._prefix(model)
        groups = []
        hidden_members: list[tuple[str, int]] = []
        if self._project(model) is None:
            hidden_members += [(f"{prefix}embeddings.{n}.weight", 1) for n in _EMBEDDINGS]
            hidden_members += [
                (f"{prefix}embeddings.LayerNorm.{p}", 0) for p in ("weight", "bias")
            ]
        for index in range(space.num_layers):
            layer = f"{prefix}encoder.layer.{index}."
            qkv = [f"{layer}attention.self.{n}" for n in ("query", "key", "value")]
            out, inter, ffn_out = (
                f"{layer}attention.output.dense",
                f"{layer}intermediate.dense",
                f"{layer}output.dense",
            )
            groups.append(
                UnitGroup(
                    name=f"{layer}heads",
                    size=space.max_num_heads,
                    block=space.head_dim,
                    members=tuple((f"{q}.{p}", 0) for q in qkv for p in ("weight", "bias"))
                    + ((f"{out}.weight", 1),),
                )
            )
            groups.append(
                UnitGroup(
                    name=f"{layer}ffn",
                    size=space.max_ffn_dim,
                    block=1,
                    members=(
                        (f"{inter}.weight", 0),
                        (f"{inter}.bias", 0),
                        (f"{ffn_out}.weight", 1),
                    ),
                )
            )
            hidden_members += [(f"{q}.weight", 1) for q in qkv] + [(f"{inter}.weight", 1)]
            for name in (out, ffn_out):
                hidden_members += [(f"{name}.weight", 0), (f"{name}.bias", 0)]
            for norm in _LAYER_NORMS:
                hidden_members += [(f"{layer}{norm}.{p}", 0) for p in ("weight", "bias")]
        for path in self._hidden_linears(model):
            hidden_members += [(f"{path}.weight", 0), (f"{path}.bias", 0)]
            if not path.endswith("embeddings_project"):
                hidden_members.append((f"{path}.weight", 1))
        hidden_members += [(f"{p}.weight", 1) for p in self._fixed_linears(model)]
        groups.append(
            UnitGroup(
                name="hidden", size=space.max_hidden_size, block=1, members=tuple(hidden_members)
            )
        )
        return groups

    def hidden_is_internal(self, model: PreTrainedModel) -> bool:
        """True when no output exposes hidden channels (a task head reads them)."""
        return bool(self._fixed_linears(model))


def reshape_layer_(
    layer: nn.Module, *, hidden: int, num_heads: int, head_dim: int, ffn_dim: int
) -> None:
    """Give one plain BERT layer ``num_heads`` heads of ``head_dim`` and an FFN of ``ffn_dim``.

    Only plain ``nn.Linear`` modules are swapped and the attention module's own shape
    attributes set, so the layer's forward stays transformers' own code.
    """
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
