"""The supernet: a converted model plus its search space, and its save / load."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from ofa._io import atomic_dir, check_replaceable, read_json, sha256_file, write_json_atomic
from ofa.families import family_for, family_named
from ofa.groups import UnitGroup
from ofa.space import SearchSpace, Subnet

logger = logging.getLogger(__name__)

__all__ = ["Supernet", "convert", "load_supernet", "set_subnet_"]

_FORMAT = "ofa-supernet"
_WEIGHTS, _CONFIG, _META = "model.safetensors", "config.json", "supernet.json"


class Supernet(nn.Module):
    """A model whose elastic modules run any subnet of ``space`` with shared weights.

    Calling the supernet calls the wrapped model with the same inputs and outputs, running the
    active subnet. Build one with :func:`convert`.
    """

    def __init__(self, model: nn.Module, space: SearchSpace, *, family: str) -> None:
        super().__init__()
        self.model = model
        self.space = space
        self.family_name = family
        self._family = family_named(family)
        self._active = space.max_subnet()
        self._family.set_subnet_(model, space, self._active)
        # the subnets training trained every step (sandwich max and min, width multipliers,
        # anchors), set by ofa.train_ and saved with the supernet; the search tries them first
        self.trained_subnets: tuple[Subnet, ...] = ()

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def active_subnet(self) -> Subnet:
        return self._active

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def set_subnet(self, subnet: Subnet) -> None:
        """Make ``subnet`` the one every later call runs.

        Raises:
            ValueError: ``subnet`` is outside this supernet's space.
        """
        subnet_type = self._family.subnet_type
        if not isinstance(subnet, subnet_type):
            raise TypeError(
                f"set_subnet takes an ofa.{subnet_type.__name__}, got {type(subnet).__name__}"
            )
        self.space.check(subnet)
        self._family.set_subnet_(self.model, self.space, subnet)
        self._active = subnet

    @contextlib.contextmanager
    def using(self, subnet: Subnet) -> Iterator[Supernet]:
        """Run ``subnet`` inside the block, then restore the subnet that was active."""
        previous = self._active
        self.set_subnet(subnet)
        try:
            yield self
        finally:
            self.set_subnet(previous)

    def extract(self, subnet: Subnet | None = None) -> nn.Module:
        """A plain model of the wrapped class holding copies of ``subnet``'s weights."""
        subnet = self._active if subnet is None else subnet
        self.space.check(subnet)
        return self._family.extract(self.model, self.space, subnet)

    def flops(
        self,
        subnet: Subnet | None = None,
        *,
        batch_size: int = 1,
        seq_len: int = 128,
        image_size: int | tuple[int, int] | None = None,
    ) -> int:
        """Matrix-multiply FLOPs of one forward pass of ``subnet`` (default: the active one).

        ``seq_len`` is for BERT-family models; ``image_size`` for CNNs (default: the space's).
        """
        subnet = self._active if subnet is None else subnet
        self.space.check(subnet)
        if batch_size < 1 or seq_len < 1:
            raise ValueError("batch_size and seq_len must be positive")
        shape = {} if image_size is None else {"image_size": image_size}
        return self._family.flops(
            self.model, self.space, subnet, batch_size=batch_size, seq_len=seq_len, **shape
        )

    def num_params(self, subnet: Subnet | None = None) -> int:
        """Parameters of the model ``extract(subnet)`` returns."""
        subnet = self._active if subnet is None else subnet
        self.space.check(subnet)
        return self._family.num_params(self.model, self.space, subnet)

    def unit_groups(self) -> list[UnitGroup]:
        """The coupled units (heads, neurons, channels) that importance scores and reorders."""
        return self._family.unit_groups(self.model, self.space)

    def hidden_is_internal(self) -> bool:
        return self._family.hidden_is_internal(self.model)

    def save(
        self, directory: str | os.PathLike, *, overwrite: bool = False, tokenizer: Any = None
    ) -> Path:
        """Write weights (safetensors), the model config and the space (JSON), atomically.

        ``tokenizer`` (a transformers tokenizer) is written into the same directory in the same
        atomic step, so a kill leaves either the old supernet with its tokenizer or the new one
        with its own; its files are hash-checked on load like the weights.
        An existing ``directory`` is replaced only when it is a supernet saved earlier (its
        ``supernet.json``, plus the tokenizer files saved with it) and ``overwrite`` is True;
        anything else there raises FileExistsError and nothing is deleted.
        """
        directory = Path(directory)
        check_replaceable(
            directory, overwrite=overwrite, foreign=_not_a_supernet, what="a supernet"
        )
        with atomic_dir(directory) as tmp:
            safetensors.torch.save_model(self.model, str(tmp / _WEIGHTS))
            write_json_atomic(tmp / _CONFIG, self._family.config_dict(self.model))
            hashed = [_WEIGHTS, _CONFIG]
            if tokenizer is not None:
                before = {entry.name for entry in tmp.iterdir()}
                tokenizer.save_pretrained(tmp)
                hashed += sorted(
                    entry.name
                    for entry in tmp.iterdir()
                    if entry.name not in before and entry.is_file()
                )
            meta = {
                "format": _FORMAT,
                "version": 1,
                "family": self.family_name,
                "model_class": type(self.model).__name__,
                "space": self.space.to_dict(),
                "active_subnet": self._active.to_dict(),
                "trained_subnets": [s.to_dict() for s in self.trained_subnets],
                "sha256": {name: sha256_file(tmp / name) for name in hashed},
            }
            write_json_atomic(tmp / _META, meta)
        logger.info("saved supernet to %s", directory)
        return directory


# what `ofa convert` / `ofa train` save beside a supernet (tokenizer.save_pretrained)
_TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "sentencepiece.bpe.model",
        "spiece.model",
        "chat_template.jinja",
    }
)


def _not_a_supernet(directory: Path) -> str | None:
    """None when ``directory`` holds only what a supernet save (and its tokenizer) wrote."""
    try:
        meta = read_json(directory / _META, what="supernet")
    except (FileNotFoundError, ValueError):
        return f"no valid {_META}"
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        return f"{_META} is not an ofa supernet's"
    ours = {_META, *meta.get("sha256", {}), *_TOKENIZER_FILES}
    others = sorted(entry.name for entry in directory.iterdir() if entry.name not in ours)
    if others:
        return f"it also holds {', '.join(others[:3])}" + (", ..." if len(others) > 3 else "")
    return None


def set_subnet_(supernet: Supernet, subnet: Subnet) -> None:
    """Functional spelling of :meth:`Supernet.set_subnet`."""
    supernet.set_subnet(subnet)


def convert(
    model: nn.Module, space: SearchSpace | None = None, *, inplace: bool = False
) -> Supernet:
    """Turn a trained model into a supernet whose subnets are leading slices of its weights.

    The given model is **not modified**: it is deep-copied first, unless ``inplace=True``, which
    saves memory for large models and turns ``model``'s own modules elastic.

    Args:
        model: a transformers BERT, RoBERTa, XLM-RoBERTa or ELECTRA encoder, bare or with a
            sequence-classification head.
        space: the search space; derived from the model's shape when ``None``.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> bert = BertForSequenceClassification(BertConfig(hidden_size=32,
        ...     num_hidden_layers=2, num_attention_heads=4, intermediate_size=64))
        >>> supernet = ofa.convert(bert)
        >>> small = supernet.extract(supernet.space.min_subnet())
    """
    family = family_for(model)
    family.check_supported(model)
    if space is None:
        space = family.default_space(model)
    elif not isinstance(space, family.space_type):
        raise TypeError(
            f"space must be an ofa.{family.space_type.__name__}, got {type(space).__name__}"
        )
    family.check_space(model, space)
    if not inplace:
        model = copy.deepcopy(model)
    rebuilt = family.make_elastic_(model)
    if rebuilt is not None:  # families that wrap the model in a new module (CNNs: a graph)
        model = rebuilt
    logger.info("converted %s into a supernet", type(model).__name__)
    return Supernet(model, space, family=family.name)


def load_supernet(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> Supernet:
    """Load a supernet written by :meth:`Supernet.save`; checks every file's sha256."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory} is not a directory; save one with Supernet.save(dir)"
        )
    meta = read_json(directory / _META, what="not a supernet directory")
    if meta.get("format") != _FORMAT or meta.get("version") != 1:
        raise ValueError(f"{directory / _META} is not an ofa supernet (format/version mismatch)")
    for name, digest in meta["sha256"].items():
        if not (directory / name).exists():
            raise FileNotFoundError(f"supernet file {directory / name} is missing")
        if sha256_file(directory / name) != digest:
            raise ValueError(
                f"{directory / name} is corrupted (sha256 mismatch); save the supernet again"
            )
    family = family_named(meta.get("family", "bert"))
    class_name = meta["model_class"]
    config_dict = read_json(directory / _CONFIG, what="config")
    with torch.device(device):  # rebuilt from JSON: no class is imported by name
        model = family.build_model(class_name, config_dict)
    space = family.space_from_dict(meta["space"])
    subnet = family.subnet_from_dict(meta["active_subnet"])
    supernet = convert(model, space, inplace=True)
    missing, unexpected = safetensors.torch.load_model(
        supernet.model, str(directory / _WEIGHTS), strict=True, device=str(device)
    )
    supernet.set_subnet(subnet)
    trained = tuple(family.subnet_from_dict(s) for s in meta.get("trained_subnets", ()))
    for one in trained:
        space.check(one)
    supernet.trained_subnets = trained
    supernet.eval()
    return supernet
