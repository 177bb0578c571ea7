"""export: subnets as plain, deployable checkpoints."""

from __future__ import annotations

__all__: list[str] = []
