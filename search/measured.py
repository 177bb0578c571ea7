"""Latency of a subnet measured on its extracted model, no latency model in between."""

from __future__ import annotations

from ofa.families import SubnetLike
from ofa.supernet import Supernet
from search._families import latency_family
from search.latency import LatencyResult, LatencyTarget, _check_counts, check_fits, measure_latency

__all__ = ["MeasuredLatency"]


class MeasuredLatency:
    """Latency of a subnet measured on its extracted model (no latency model in between).

    Works for BERT-family supernets (token inputs of ``target.seq_len``) and CNNs (images of
    ``target.image_size``, default the search space's; ``self.target`` has it filled in).

    Example:
        >>> latency = MeasuredLatency(supernet, LatencyTarget(device="cpu", seq_len=64))
        >>> latency(supernet.space.min_subnet())   # milliseconds
    """

    def __init__(
        self, supernet: Supernet, target: LatencyTarget, *, warmup: int = 2, rounds: int = 5
    ) -> None:
        _check_counts(warmup, rounds)
        self._family = latency_family(supernet.family_name)
        self.supernet = supernet
        self.target = self._family.resolve_target(supernet, target)
        check_fits(supernet, self.target)
        self.warmup = warmup
        self.rounds = rounds
        self._inputs = self._family.inputs(supernet, self.target)

    def measure(self, subnet: SubnetLike) -> LatencyResult:
        """Extract ``subnet`` and time it on the target."""
        model = self.supernet.extract(subnet)  # type: ignore[arg-type]  # BERT-typed signature
        inputs = self._inputs
        return measure_latency(
            model,
            inputs,
            device=self.target.device,
            dtype=self.target.dtype,
            warmup=self.warmup,
            rounds=self.rounds,
            num_threads=self.target.num_threads,
            repeats=3,
            runtime=self.target.runtime,
        )

    def predict(self, subnet: SubnetLike) -> float:
        return self.measure(subnet).median_ms

    def __call__(self, subnet: SubnetLike) -> float:
        return self.predict(subnet)
