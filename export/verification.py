"""Proof that an exported checkpoint computes what the supernet computes for its subnet."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from export._compare import DENSE_ATOL, VerifyResult, check_diff, compare, masked_supernet
from export._families import export_adapter
from export.checkpoint import export_family, load, read_manifest
from ofa.families import SubnetLike, family_named
from ofa.supernet import Supernet

__all__ = ["DENSE_ATOL", "VerifyResult", "check_diff", "compare", "masked_supernet", "verify"]


def verify(
    directory: str | os.PathLike, supernet: Supernet, subnet: SubnetLike | None = None
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
    space: Any = supernet.space  # the family's search space
    space.check(subnet)
    model: Any = load(directory, semi_structured="off")
    return export_adapter(family).verify(model, supernet, subnet, manifest, Path(directory))
