"""Proof that an exported checkpoint computes what the supernet computes for its subnet."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from export.onnx import sample_inputs
from ofa.cnn_space import CnnSubnet
from ofa.convert import family_named
from ofa.space import Subnet
from ofa.supernet import Supernet

__all__ = ["VerifyResult", "verify", "compare", "masked_supernet", "check_diff"]

DENSE_ATOL = 1e-5


@dataclass(frozen=True, kw_only=True)
class VerifyResult:
    """What :func:`verify` compared and how far apart the outputs were.

    Attributes:
        reference: ``"supernet"``; ``"masked supernet"`` for 2:4 exports (the supernet with the
            same weights zeroed); ``"masked supernet before fine-tune"`` when the 2:4 export was
            fine-tuned afterwards (then the difference is reported, not bounded);
            ``"calibrated extracted model"`` for CNN exports whose batch-norm statistics were
            recalibrated (the extracted subnet with the export's statistics).
        max_abs_diff: largest absolute difference of the main output (logits or last hidden state).
        atol: the bound it was held to (``None`` when unbounded).
        passed: True when within ``atol`` (and, for 2:4, every sparse layer is 2:4).
    """

    reference: Literal[
        "supernet",
        "masked supernet",
        "masked supernet before fine-tune",
        "calibrated extracted model",
    ]
    max_abs_diff: float
    atol: float | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _main(outputs: Any) -> Tensor:
    logits = getattr(outputs, "logits", None)
    return logits if logits is not None else outputs.last_hidden_state


@contextlib.contextmanager
def _eval(*modules: nn.Module) -> Iterator[None]:
    # every submodule's own flag: module.train(mode) would overwrite the children's
    modes = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def compare(model: nn.Module, reference: nn.Module, *, vocab_size: int) -> float:
    """Largest absolute difference of the two models' main outputs on two padded batches."""
    device = next(model.parameters()).device
    ref_device = next(reference.parameters()).device
    worst = 0.0
    with _eval(model, reference), torch.no_grad():
        for seed, (batch_size, seq_len) in enumerate(((2, 9), (3, 16))):
            inputs = sample_inputs(vocab_size, batch_size=batch_size, seq_len=seq_len, seed=seed)
            got = _main(model(**{k: v.to(device) for k, v in inputs.items()})).float().cpu()
            want = _main(reference(**{k: v.to(ref_device) for k, v in inputs.items()}))
            worst = max(worst, float((got - want.float().cpu()).abs().max()))
    return worst


def masked_supernet(supernet: Supernet, subnet: Subnet, masks: dict[str, Tensor]) -> Supernet:
    """A copy of ``supernet`` whose ``subnet`` weights are zeroed where the export's ``masks`` are.

    ``masks`` map the exported model's Linear names (layer i = the subnet's i-th kept layer) to
    boolean masks of the exported (sliced) weight shapes.
    """
    masked = copy.deepcopy(supernet)
    layer_key = "encoder.layer."
    modules = dict(masked.model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            source = name
            prefix, found, rest = name.partition(layer_key)
            if found:
                index, _, tail = rest.partition(".")
                source = f"{prefix}{layer_key}{subnet.layers[int(index)]}.{tail}"
            weight = modules[source].weight
            rows, cols = mask.shape
            weight[:rows, :cols].mul_(mask.to(weight.device))
    return masked


def verify(
    directory: str | os.PathLike, supernet: Supernet, subnet: Subnet | CnnSubnet | None = None
) -> VerifyResult:
    """Load the export in ``directory`` and check its outputs against ``supernet`` running it.

    fp32 exports must match within 1e-5; a 2:4 export is compared with the supernet whose same
    weights are zeroed (the same bound), unless it was fine-tuned after masking. A CNN export
    whose batch-norm statistics were calibrated is compared with the supernet's extracted
    subnet carrying the export's statistics (every weight still from the supernet), on random
    images of the space's ``image_size``.

    Raises:
        ValueError: the subnet differs from the export's, or the outputs differ beyond the bound.

    Example:
        >>> export.save(supernet, subnet, "out/")
        >>> export.verify("out/", supernet, subnet).max_abs_diff < 1e-5
        True
    """
    from export.checkpoint import export_family, load, read_manifest

    manifest = read_manifest(directory)
    family = export_family(manifest)
    if family != supernet.family_name:
        raise ValueError(
            f"{directory} is a {family} export but the supernet's family is "
            f"{supernet.family_name!r}: verify it against the supernet it came from"
        )
    exported = family_named(family).subnet_from_dict(manifest["subnet"])
    subnet = exported if subnet is None else subnet
    if subnet != exported:
        raise ValueError(f"{directory} holds subnet {exported.to_json()}, not {subnet.to_json()}")
    space: Any = supernet.space  # a SearchSpace or a CnnSearchSpace, by family
    space.check(subnet)
    model: Any = load(directory, semi_structured="off")
    from export._families import export_adapter

    return export_adapter(family).verify(model, supernet, subnet, manifest, Path(directory))


def verify_bert(
    model: Any, supernet: Supernet, subnet: Subnet, manifest: Any, directory: Path
) -> VerifyResult:
    """A BERT-family export against the supernet (against the masked supernet for 2:4)."""
    vocab_size = model.config.vocab_size
    sparsity = manifest.get("sparsity")
    if not sparsity:
        with supernet.using(subnet):
            diff = compare(model, supernet, vocab_size=vocab_size)
        return check_diff("supernet", diff, DENSE_ATOL)
    from export.sparsity import is_2_4

    modules = dict(model.named_modules())
    masks = {name: modules[name].weight.detach() != 0 for name in sparsity["layers"]}
    pattern_ok = all(is_2_4(modules[name].weight) for name in sparsity["layers"])
    reference = masked_supernet(supernet, subnet, masks)
    with reference.using(subnet):
        diff = compare(model, reference, vocab_size=vocab_size)
    if sparsity.get("finetune_steps", 0):
        result = VerifyResult(
            reference="masked supernet before fine-tune",
            max_abs_diff=diff,
            atol=None,
            passed=pattern_ok,
        )
    else:
        result = check_diff("masked supernet", diff, DENSE_ATOL)
    if not pattern_ok:
        raise ValueError(f"{directory}: a layer listed as 2:4 is not 2:4 sparse")
    return result


def check_diff(reference: Any, diff: float, atol: float) -> VerifyResult:
    """A passed :class:`VerifyResult`, or ``ValueError`` when ``diff`` exceeds ``atol``."""
    if diff > atol:
        raise ValueError(
            f"exported outputs differ from the {reference}'s by {diff:.2e} > {atol:.0e}: the export "
            "does not compute the subnet"
        )
    return VerifyResult(reference=reference, max_abs_diff=diff, atol=atol, passed=True)
