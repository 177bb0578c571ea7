"""search: latency measurement and models, Optuna search over a supernet's subnets."""

from __future__ import annotations

__all__: list[str] = []
