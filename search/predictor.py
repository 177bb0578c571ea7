"""Latency models of one device: a per-layer table or a fitted predictor, with held-out error.

``LatencyModel.profile`` measures random extracted subnets end to end, builds both models from
the training share and keeps the one with the lower median relative error on the held-out share.
The model is only valid for the device, dtype and input shape it was profiled on; using it for
anything else is refused.
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from ofa._io import read_json, write_json_atomic
from ofa.space import SearchSpace, Subnet
from ofa.supernet import Supernet
from search._profile import draw_subnets, layer_table
from search.latency import (
    DType,
    LatencyTarget,
    MeasuredLatency,
    device_name,
)

logger = logging.getLogger(__name__)

__all__ = ["LatencyModel"]

_FORMAT = "ofa-latency-model"
Method = Literal["table", "predictor"]


def _features(subnet: Subnet) -> list[float]:
    """FLOP-like terms of a subnet at a fixed input shape (the shape scales every term alike)."""
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


def _relative_errors(predicted: Sequence[float], measured: Sequence[float]) -> list[float]:
    return [abs(p - m) / m for p, m in zip(predicted, measured)]


def _nnls_relative(features: np.ndarray, measured: Sequence[float]) -> np.ndarray:
    """Non-negative least squares on relative error (rows divided by the measured latency).

    Non-negative terms keep predictions positive and monotone in every width, so a noisy sample
    cannot make a bigger subnet look faster; a negative term is dropped and the rest refitted.
    """
    targets = np.asarray(measured, dtype=np.float64)
    weights = 1.0 / targets
    design = features * weights[:, None]
    active = list(range(design.shape[1]))
    coefficients = np.zeros(design.shape[1])
    while active:
        solution, *_ = np.linalg.lstsq(design[:, active], targets * weights, rcond=None)
        if solution.min() >= 0:
            coefficients[active] = solution
            break
        del active[int(np.argmin(solution))]
    return coefficients


def _fit(subnets: Sequence[Subnet], measured: Sequence[float]) -> tuple[list[float], list[float]]:
    """The fitted predictor: non-negative weights of FLOP-like features, scaled to <= 1."""
    features = np.array([_features(s) for s in subnets], dtype=np.float64)
    scale = np.maximum(np.abs(features).max(axis=0), 1e-12)
    return _nnls_relative(features / scale, measured).tolist(), scale.tolist()


class LatencyModel:
    """Predicted latency (ms) of a supernet's subnets on one device, dtype and input shape.

    Build one with :meth:`profile`; save / load it as JSON. Calling it on a subnet returns ms.

    Example:
        >>> model = LatencyModel.profile(supernet, device="cpu", batch_size=1, seq_len=128)
        >>> model.held_out_error        # median |predicted - measured| / measured
        >>> model(supernet.space.min_subnet())
        >>> model.save("runs/latency_cpu.json")
    """

    def __init__(
        self,
        *,
        target: LatencyTarget,
        space: SearchSpace,
        method: Method,
        table: dict[tuple[int, int, int], float],
        fixed_ms: dict[int, float],
        table_scale: dict[int, float] | None = None,
        coefficients: list[float],
        scale: list[float],
        held_out: dict[str, Any],
        measurements: list[dict[str, Any]],
        device_name: str,
        torch_version: str,
    ) -> None:
        if method not in ("table", "predictor"):
            raise ValueError(f"unknown latency-model method {method!r}: 'table' or 'predictor'")
        self.target = target
        self.space = space
        self.method: Method = method
        self.table = dict(table)
        self.fixed_ms = dict(fixed_ms)
        self.table_scale = dict(table_scale or {0: 1.0})
        self.coefficients = list(coefficients)
        self.scale = list(scale)
        self.held_out = dict(held_out)
        self.measurements = list(measurements)
        self.device_name = device_name
        self.torch_version = torch_version

    # ---- prediction ----------------------------------------------------------------------
    @property
    def held_out_error(self) -> float:
        """Median absolute relative error of the chosen method on the held-out subnets."""
        return float(self.held_out[f"{self.method}_median_error"])

    def predict_table(self, subnet: Subnet) -> float:
        layers = 0.0
        for heads, ffn in zip(subnet.num_heads, subnet.ffn_dims):
            key = (heads, ffn, subnet.hidden_size)
            if key not in self.table:
                raise ValueError(
                    f"the latency table has no entry for heads={heads}, ffn={ffn}, "
                    f"hidden={subnet.hidden_size}: the subnet is outside the profiled space"
                )
            layers += self.table[key]
        width = subnet.hidden_size
        fixed = self.fixed_ms.get(width, self.fixed_ms.get(0, 0.0))
        return self.table_scale.get(width, self.table_scale.get(0, 1.0)) * layers + fixed

    def predict_fitted(self, subnet: Subnet) -> float:
        features = np.asarray(_features(subnet)) / np.asarray(self.scale)
        return float(features @ np.asarray(self.coefficients))

    def predict(self, subnet: Subnet) -> float:
        """Predicted latency of ``subnet`` in ms on this model's target."""
        self.space.check(subnet)
        if self.method == "table":
            return self.predict_table(subnet)
        return self.predict_fitted(subnet)

    def __call__(self, subnet: Subnet) -> float:
        return self.predict(subnet)

    # ---- refusal -------------------------------------------------------------------------
    def check(self, target: LatencyTarget | None = None, space: SearchSpace | None = None) -> None:
        """Refuse (``ValueError``) a target or space this model was not profiled for."""
        here = device_name(self.target.device)
        if here != self.device_name:
            raise ValueError(
                f"this latency model was profiled on {self.device_name!r}, but {self.target.device} "
                f"here is {here!r}: run `ofa profile` on this device"
            )
        if target is not None and target != self.target:
            raise ValueError(
                f"this latency model was profiled for {self.target.describe()}, not "
                f"{target.describe()}: run `ofa profile` with those settings"
            )
        if space is not None and space != self.space:
            raise ValueError(
                "this latency model was profiled for another search space: run `ofa profile` "
                "on this supernet"
            )

    # ---- JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": 1,
            "target": self.target.to_dict(),
            "device_name": self.device_name,
            "torch_version": self.torch_version,
            "space": self.space.to_dict(),
            "method": self.method,
            "table": [[h, f, d, ms] for (h, f, d), ms in sorted(self.table.items())],
            "fixed_ms": {str(d): ms for d, ms in sorted(self.fixed_ms.items())},
            "table_scale": {str(d): v for d, v in sorted(self.table_scale.items())},
            "coefficients": self.coefficients,
            "scale": self.scale,
            "held_out": self.held_out,
            "measurements": self.measurements,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyModel:
        if data.get("format") != _FORMAT or data.get("version") != 1:
            raise ValueError("not an ofa latency model (format/version mismatch)")
        return cls(
            target=LatencyTarget.from_dict(data["target"]),
            space=SearchSpace.from_dict(data["space"]),
            method=data["method"],
            table={(int(h), int(f), int(d)): float(ms) for h, f, d, ms in data["table"]},
            fixed_ms={int(d): float(ms) for d, ms in data["fixed_ms"].items()},
            table_scale={int(d): float(v) for d, v in data.get("table_scale", {0: 1.0}).items()},
            coefficients=[float(c) for c in data["coefficients"]],
            scale=[float(s) for s in data["scale"]],
            held_out=data["held_out"],
            measurements=data["measurements"],
            device_name=data["device_name"],
            torch_version=data["torch_version"],
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as JSON, atomically."""
        write_json_atomic(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        target: LatencyTarget | None = None,
        space: SearchSpace | None = None,
    ) -> LatencyModel:
        """Read a saved model; refuse it if it was profiled for another device, target or space."""
        model = cls.from_dict(read_json(path, what="latency model"))
        model.check(target, space)
        return model

    # ---- profiling -----------------------------------------------------------------------
    @classmethod
    def profile(
        cls,
        supernet: Supernet,
        *,
        device: str = "cpu",
        dtype: DType = "float32",
        batch_size: int = 1,
        seq_len: int = 128,
        num_threads: int = 2,
        num_train: int = 30,
        num_test: int = 30,
        warmup: int = 3,
        rounds: int = 10,
        seed: int = 0,
        progress: bool = False,
    ) -> LatencyModel:
        """Measure the device and build its latency model, reporting held-out error.

        Args:
            supernet: the supernet whose subnets will be predicted.
            num_train: random subnets (plus the max and min subnet) measured to fit.
            num_test: further random subnets measured only to score both methods.
            warmup, rounds: calls before and during each timing.
        """
        if num_train < 4 or num_test < 1:
            raise ValueError("need num_train >= 4 and num_test >= 1 to fit and score a model")
        target = LatencyTarget(
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            seq_len=seq_len,
            num_threads=num_threads,
        )
        space = supernet.space
        train, test = draw_subnets(space, num_train, num_test, seed)
        measurer = MeasuredLatency(supernet, target, warmup=warmup, rounds=rounds)
        records = []
        for index, subnet in enumerate(
            tqdm(train + test, desc="profile subnets", disable=not progress)
        ):
            result = measurer.measure(subnet)
            records.append(
                {
                    "subnet": subnet.to_dict(),
                    "measured_ms": result.median_ms,
                    "relative_spread": result.relative_spread,
                    "split": "train" if index < len(train) else "test",
                }
            )
        table = layer_table(supernet, target, warmup=warmup, rounds=rounds, progress=progress)
        return cls._build(target, space, table, records, device_name(device), torch.__version__)

    def refit(self) -> LatencyModel:
        """Both methods fitted again from the stored table and measurements (no measuring)."""
        return self._build(
            self.target,
            self.space,
            self.table,
            self.measurements,
            self.device_name,
            self.torch_version,
        )

    @classmethod
    def _build(
        cls,
        target: LatencyTarget,
        space: SearchSpace,
        table: dict[tuple[int, int, int], float],
        records: list[dict[str, Any]],
        device: str,
        torch_version: str,
    ) -> LatencyModel:
        """Fit both methods on the training records, score them on the held-out ones."""
        split = {
            name: (
                [Subnet.from_dict(r["subnet"]) for r in records if r["split"] == name],
                [float(r["measured_ms"]) for r in records if r["split"] == name],
            )
            for name in ("train", "test")
        }
        table_scale, fixed = _calibrate(table, *split["train"])
        coefficients, scale = _fit(*split["train"])
        model = cls(
            target=target,
            space=space,
            method="table",
            table=table,
            fixed_ms=fixed,
            table_scale=table_scale,
            coefficients=coefficients,
            scale=scale,
            held_out={},
            measurements=records,
            device_name=device,
            torch_version=torch_version,
        )
        spreads = [float(r["relative_spread"]) for r in records if "relative_spread" in r]
        model.held_out = _score(model, *split["test"], spreads or [float("nan")])
        errors = {m: model.held_out[f"{m}_median_error"] for m in ("table", "predictor")}
        model.method = "table" if errors["table"] <= errors["predictor"] else "predictor"
        logger.info(
            "latency model on %s: %s, held-out error %.1f%%",
            target.describe(),
            model.method,
            100 * model.held_out_error,
        )
        return model


def _calibrate(
    table: dict[tuple[int, int, int], float], subnets: Sequence[Subnet], measured: Sequence[float]
) -> tuple[dict[int, float], dict[int, float]]:
    """Per hidden width, the median ratio of measured latency to the layers' table sum.

    Layers timed alone miss what the whole model adds (embeddings, head, dispatch), mostly in
    proportion to the work, and by width. Medians of ratios, not least squares: on a shared
    machine a few measurements are far off and a fitted offset chases them (an additive median
    offset went negative and did worse on held-out subnets). Key 0 is the fallback for widths
    with no sample. The additive fixed parts stay zero.
    """
    ratios: dict[int, list[float]] = {}
    for subnet, ms in zip(subnets, measured):
        layers = sum(
            table[(h, f, subnet.hidden_size)] for h, f in zip(subnet.num_heads, subnet.ffn_dims)
        )
        ratios.setdefault(subnet.hidden_size, []).append(ms / layers)
        ratios.setdefault(0, []).append(ms / layers)
    scales = {d: statistics.median(values) for d, values in ratios.items()}
    return scales, {d: 0.0 for d in scales}


def _score(
    model: LatencyModel, test: Sequence[Subnet], measured: Sequence[float], spreads: list[float]
) -> dict[str, Any]:
    table_errors = _relative_errors([model.predict_table(s) for s in test], measured)
    fitted_errors = _relative_errors([model.predict_fitted(s) for s in test], measured)
    return {
        "num_subnets": len(test),
        "table_median_error": statistics.median(table_errors),
        "table_max_error": max(table_errors),
        "predictor_median_error": statistics.median(fitted_errors),
        "predictor_max_error": max(fitted_errors),
        "median_measurement_spread": statistics.median(spreads),
    }
