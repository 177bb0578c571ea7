"""Latency models of one device: a per-layer table or a fitted predictor, with held-out error.

``LatencyModel.profile`` measures random extracted subnets end to end, builds both models from
the training share and keeps the one with the lower median relative error on the held-out share.
The model is only valid for the device, dtype and input shape it was profiled on; using it for
anything else is refused. What differs between model families (table keys, features, how the
table is timed) comes from :mod:`search._families`; BERT tables hold one encoder layer per
(heads, FFN width, hidden width), CNN tables one conv / linear unit per shape, width and kernel.
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import zip_longest
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ofa._io import read_json, write_json_atomic
from ofa.families import SpaceLike, SubnetLike
from ofa.supernet import Supernet
from search._families import (
    family_of_space,
    latency_family,
    space_from_dict,
    subnet_from_dict,
)
from search._fit import fit_nonnegative, relative_errors
from search._measure import measure_anchors, measure_subnets
from search._profile import draw_subnets
from search.latency import (
    DType,
    LatencyTarget,
    check_fits,
    device_name,
)
from search.timing import Estimate, MeasurePolicy, choose_threads

logger = logging.getLogger(__name__)

__all__ = ["LatencyModel", "StaleProfileError", "UnusableProfileError", "Validation"]

_FORMAT = "ofa-latency-model"
MAX_ERROR = 0.15  # a latency model whose held-out error is above this is not usable


class UnusableProfileError(ValueError):
    """A profile whose held-out error is above the bound; ``model`` holds it for diagnosis."""

    def __init__(self, message: str, model: LatencyModel) -> None:
        super().__init__(message)
        self.model = model


class StaleProfileError(ValueError):
    """A saved profile that no longer predicts this device (its anchors moved). ``reason`` is
    what moved; the message is the reason, then what to do (``advice``), for the CLI's line."""

    def __init__(self, reason: str, advice: str = "") -> None:
        super().__init__(f"{reason}: {advice}" if advice else reason)
        self.reason = reason


@dataclass(frozen=True)
class Validation:
    """A saved profile's anchors (max and min subnet) measured again, side by side.

    ``scale`` is the max subnet's latency now over as profiled (1.3: the device runs 30% slower
    than when profiled); ``shape_error`` is how far the min/max ratio measured now is from the
    profiled one. Both are judged on their 95% intervals: only a move beyond ``bound`` that the
    noise cannot explain counts.
    """

    max_ms: Estimate
    min_ms: Estimate
    ratio: Estimate  # min over max, paired, now
    predicted_max_ms: float
    predicted_min_ms: float
    scale: float
    shape_error: float
    bound: float

    @classmethod
    def from_anchors(
        cls, model: LatencyModel, max_ms: Estimate, ratio: Estimate, bound: float
    ) -> Validation:
        """From the max subnet's latency and the min/max ratio, both measured now."""
        predicted_max, predicted_min = model.anchors_ms()
        return cls(
            max_ms=max_ms,
            min_ms=ratio.scaled(max_ms.value),
            ratio=ratio,
            predicted_max_ms=predicted_max,
            predicted_min_ms=predicted_min,
            scale=max_ms.value / predicted_max,
            shape_error=abs(ratio.value / (predicted_min / predicted_max) - 1.0),
            bound=bound,
        )

    @staticmethod
    def _outside(estimate: Estimate, reference: float, bound: float) -> bool:
        return estimate.low > reference * (1.0 + bound) or estimate.high < reference * (
            1.0 - bound
        )

    @property
    def moved(self) -> bool:
        """The device's speed moved beyond the bound since the profile (load, clocks)."""
        return self._outside(self.max_ms, self.predicted_max_ms, self.bound)

    @property
    def stale(self) -> bool:
        """The profile's shape (min over max) no longer holds: re-profile."""
        return self._outside(self.ratio, self.predicted_min_ms / self.predicted_max_ms, self.bound)

    def describe(self) -> str:
        return (
            f"max subnet {self.max_ms.value:.3g} ms (profiled {self.predicted_max_ms:.3g}), "
            f"min subnet {self.min_ms.value:.3g} ms (profiled {self.predicted_min_ms:.3g}): "
            f"{self.scale:.2f}x the profile's scale, shape off by {100 * self.shape_error:.0f}%"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_ms": self.max_ms.to_dict(),
            "min_ms": self.min_ms.to_dict(),
            "min_over_max": self.ratio.to_dict(),
            "predicted_max_ms": self.predicted_max_ms,
            "predicted_min_ms": self.predicted_min_ms,
            "scale": self.scale,
            "shape_error": self.shape_error,
            "bound": self.bound,
        }


Method = Literal["table", "predictor"]


class LatencyModel:
    """Predicted latency (ms) of a supernet's subnets on one device, dtype and input shape.

    Build one with :meth:`profile`; save / load it as JSON. Calling it on a subnet returns ms.
    Works for BERT-family and CNN supernets (``family``); a CNN model also stores its layer
    units (``plan``), so a loaded model predicts without the supernet.

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
        space: SpaceLike,
        method: Method,
        table: dict[tuple[Any, ...], float],
        fixed_ms: dict[int, float],
        table_scale: dict[int, float] | None = None,
        coefficients: list[float],
        scale: list[float],
        held_out: dict[str, Any],
        measurements: list[dict[str, Any]],
        device_name: str,
        torch_version: str,
        plan: Any = None,
    ) -> None:
        if method not in ("table", "predictor"):
            raise ValueError(f"unknown latency-model method {method!r}: 'table' or 'predictor'")
        self.target = target
        self.space = space
        self.family = family_of_space(space)
        self._family = latency_family(self.family)
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
        self.plan = plan

    # ---- prediction ----------------------------------------------------------------------
    @property
    def held_out_error(self) -> float:
        """Median absolute relative error of the chosen method on the held-out subnets."""
        return float(self.held_out[f"{self.method}_median_error"])

    def _layers_ms(self, subnet: SubnetLike) -> float:
        total = 0.0
        for key in self._family.table_keys(self.plan, subnet):
            if key not in self.table:
                raise ValueError(
                    f"the latency table has no entry for layer {key}: the subnet is outside the "
                    "profiled space"
                )
            total += self.table[key]
        return total

    def predict_table(self, subnet: SubnetLike) -> float:
        """The table's prediction: the subnet's layers timed alone, times a calibration ratio."""
        group = self._family.calibration_group(subnet)
        fixed = self.fixed_ms.get(group, self.fixed_ms.get(0, 0.0))
        ratio = self.table_scale.get(group, self.table_scale.get(0, 1.0))
        return ratio * self._layers_ms(subnet) + fixed

    def predict_fitted(self, subnet: SubnetLike) -> float:
        features = np.asarray(self._family.features(self.plan, subnet)) / np.asarray(self.scale)
        return float(features @ np.asarray(self.coefficients))

    def predict(self, subnet: SubnetLike) -> float:
        """Predicted latency of ``subnet`` in ms on this model's target."""
        self.space.check(subnet)  # type: ignore[arg-type]
        if self.method == "table":
            return self.predict_table(subnet)
        return self.predict_fitted(subnet)

    def __call__(self, subnet: SubnetLike) -> float:
        return self.predict(subnet)

    # ---- refusal -------------------------------------------------------------------------
    def check(
        self,
        target: LatencyTarget | None = None,
        space: SpaceLike | None = None,
    ) -> None:
        """Refuse (``ValueError``) a target or space this model was not profiled for."""
        here = device_name(self.target.device)
        if here != self.device_name:
            raise ValueError(
                f"this latency model was profiled on {self.device_name!r}, but {self.target.device} "
                f"here is {here!r}: run `ofa profile` on this device"
            )
        if target is not None:  # e.g. a CNN target without an image size means the space's
            target = self._family.complete_target(self.space, target)
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
            "family": self.family,
            "target": self.target.to_dict(),
            "device_name": self.device_name,
            "torch_version": self.torch_version,
            "space": self.space.to_dict(),
            "method": self.method,
            "table": [[*key, ms] for key, ms in sorted(self.table.items())],
            "fixed_ms": {str(d): ms for d, ms in sorted(self.fixed_ms.items())},
            "table_scale": {str(d): v for d, v in sorted(self.table_scale.items())},
            "coefficients": self.coefficients,
            "scale": self.scale,
            "held_out": dict(self.held_out),
            "measurements": [dict(r) for r in self.measurements],
            "plan": self._family.plan_to_json(self.plan),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyModel:
        if data.get("format") != _FORMAT or data.get("version") != 1:
            raise ValueError("not an ofa latency model (format/version mismatch)")
        family = data.get("family", "bert")  # models saved before CNNs were all BERT
        space = space_from_dict(family, data["space"])
        return cls(
            target=LatencyTarget.from_dict(data["target"]),
            space=space,
            method=data["method"],
            table={tuple(row[:-1]): float(row[-1]) for row in data["table"]},
            fixed_ms={int(d): float(ms) for d, ms in data["fixed_ms"].items()},
            table_scale={int(d): float(v) for d, v in data.get("table_scale", {0: 1.0}).items()},
            coefficients=[float(c) for c in data["coefficients"]],
            scale=[float(s) for s in data["scale"]],
            held_out=data["held_out"],
            measurements=data["measurements"],
            device_name=data["device_name"],
            torch_version=data["torch_version"],
            plan=latency_family(family).plan_from_json(data.get("plan")),
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
        space: SpaceLike | None = None,
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
        image_size: int | tuple[int, int] | None = None,
        num_threads: int | None = None,
        num_train: int = 30,
        num_test: int = 30,
        warmup: int = 3,
        rounds: int = 10,
        seed: int = 0,
        progress: bool = False,
        policy: MeasurePolicy | None = None,
        max_error: float | None = MAX_ERROR,
        runtime: str = "eager",
        phase: str = "prefill",
        memory_format: str = "contiguous",
    ) -> LatencyModel:
        """Measure the device and build its latency model, reporting held-out error.

        Subnets are timed in blocks beside the max subnet (paired rounds, the fastest of short
        repeats, see :mod:`search.timing`), so drift of a shared machine cancels; a subnet that
        times slower than one containing it is measured again. A block whose spread stays over
        the bound raises :class:`search.TooNoisyError`.

        Args:
            supernet: the supernet whose subnets will be predicted (BERT-family or CNN).
            seq_len: tokens per sequence (BERT-family supernets).
            image_size: a CNN's input (height, width); default: its search space's.
            num_threads: CPU threads; ``None`` takes the cores idle right now.
            num_train: random subnets (plus the max and min subnet) measured to fit.
            num_test: further random subnets measured only to score both methods.
            warmup, rounds: calls before and during each layer's timing (the table).
            policy: rounds and bounds of the subnets' timing (default MeasurePolicy.quick()).
            max_error: a held-out median error above this raises UnusableProfileError (its
                ``model`` attribute holds the model for diagnosis); ``None`` accepts any.
            runtime: ``"eager"``, ``"compile"`` or ``"onnxruntime"``: what runs the subnets
                (the per-layer table is timed eager and calibrated on them).
            phase: for a causal LM, ``"prefill"`` (a prompt of ``seq_len`` tokens) or
                ``"decode"`` (ms per generated token with ``seq_len`` tokens in the KV cache).
            memory_format: a CNN's layout while timed, ``"contiguous"`` or ``"channels_last"``
                (see :class:`LatencyTarget`): the one you will deploy in.
        """
        if num_train < 4 or num_test < 1:
            raise ValueError("need num_train >= 4 and num_test >= 1 to fit and score a model")
        family = latency_family(supernet.family_name)
        target = LatencyTarget(  # validates the device before anything is measured
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            seq_len=seq_len,
            num_threads=num_threads or 1,
            image_size=image_size,  # type: ignore[arg-type]
            runtime=runtime,
            phase=phase,
            memory_format=memory_format,
        )
        if torch.device(device).type == "cpu":
            target = replace(target, num_threads=choose_threads(num_threads))
        target = family.resolve_target(supernet, target)
        check_fits(supernet, target)
        space = supernet.space
        train, test = draw_subnets(space, num_train, num_test, seed)
        subnets = train + test
        # measured alternately from both shares, so what drift is left hits the fitted and the
        # held-out subnets alike; the records keep the train-then-test order
        order = _alternating(len(train), len(test))
        timings, reference = measure_subnets(
            supernet,
            target,
            [subnets[i] for i in order],
            policy=policy or MeasurePolicy.quick(),
            progress=progress,
        )
        by_index = dict(zip(order, timings))
        records = [
            {
                "subnet": subnet.to_dict(),
                "measured_ms": by_index[index].ms,
                "relative_spread": by_index[index].interval,
                "split": "train" if index < len(train) else "test",
            }
            for index, subnet in enumerate(subnets)
        ]
        plan = family.make_plan(supernet, target)
        table = family.layer_table(
            supernet, target, plan, warmup=warmup, rounds=rounds, progress=progress
        )
        model = cls._build(
            target, space, table, records, device_name(device), torch.__version__, plan
        )
        if max_error is not None and model.held_out_error > max_error:
            raise UnusableProfileError(
                f"the latency model's held-out error is {100 * model.held_out_error:.0f}%, above "
                f"the {100 * max_error:.0f}% bound (measurement spread "
                f"{100 * model.held_out['median_measurement_spread']:.1f}%), so it is not usable: "
                "profile on a quieter machine, with fewer threads (--threads 1), or with more "
                "subnets (--subnets)",
                model,
            )
        return model

    # ---- reuse ---------------------------------------------------------------------------
    def anchors_ms(self) -> tuple[float, float]:
        """The max and the min subnet's latency as measured when profiled (ms); predicted
        where the profile did not measure them."""
        measured = {
            subnet_from_dict(self.family, r["subnet"]): float(r["measured_ms"])
            for r in self.measurements
        }
        space = self.space
        return tuple(  # type: ignore[return-value]
            measured.get(s) or self.predict(s) for s in (space.max_subnet(), space.min_subnet())
        )

    def validate(
        self,
        supernet: Supernet,
        *,
        policy: MeasurePolicy | None = None,
        bound: float = MAX_ERROR,
    ) -> Validation:
        """Measure the max and the min subnet again, side by side, and compare with the model.

        Cheap (two extracted models, a few seconds); see :class:`Validation` for what it says.
        Raises TooNoisyError when the machine is too noisy to tell.
        """
        self.check(space=supernet.space)
        paired = measure_anchors(supernet, self.target, policy=policy)
        return Validation.from_anchors(self, paired.times["max"], paired.ratios["min"], bound)

    def rescaled(self, scale: float) -> LatencyModel:
        """The same model with every prediction multiplied by ``scale`` (the device now)."""
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        model = LatencyModel.from_dict(self.to_dict())
        model.table_scale = {g: v * scale for g, v in model.table_scale.items()}
        model.fixed_ms = {g: v * scale for g, v in model.fixed_ms.items()}
        model.coefficients = [c * scale for c in model.coefficients]
        return model

    def refit(self) -> LatencyModel:
        """Both methods fitted again from the stored table and measurements (no measuring)."""
        return self._build(
            self.target,
            self.space,
            self.table,
            self.measurements,
            self.device_name,
            self.torch_version,
            self.plan,
        )

    @classmethod
    def _build(
        cls,
        target: LatencyTarget,
        space: SpaceLike,
        table: dict[tuple[Any, ...], float],
        records: list[dict[str, Any]],
        device: str,
        torch_version: str,
        plan: Any = None,
    ) -> LatencyModel:
        """Fit both methods on the training records, score them on the held-out ones."""
        name = family_of_space(space)
        family = latency_family(name)
        split = {
            part: (
                [subnet_from_dict(name, r["subnet"]) for r in records if r["split"] == part],
                [float(r["measured_ms"]) for r in records if r["split"] == part],
            )
            for part in ("train", "test")
        }
        model = cls(
            target=target,
            space=space,
            method="table",
            table=table,
            fixed_ms={},
            coefficients=[],
            scale=[],
            held_out={},
            measurements=records,
            device_name=device,
            torch_version=torch_version,
            plan=plan,
        )
        subnets, measured = split["train"]
        model.table_scale, model.fixed_ms = _calibrate(model, subnets, measured)
        model.coefficients, model.scale = fit_nonnegative(
            [family.features(plan, s) for s in subnets], measured
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


def _alternating(first: int, second: int) -> list[int]:
    """Indices of two consecutive runs taken in turn: 0, first, 1, first + 1, ..."""
    pairs = zip_longest(range(first), range(first, first + second))
    return [index for pair in pairs for index in pair if index is not None]


def _calibrate(
    model: LatencyModel, subnets: Sequence[SubnetLike], measured: Sequence[float]
) -> tuple[dict[int, float], dict[int, float]]:
    """Per calibration group, the median ratio of measured latency to the layers' table sum.

    Layers timed alone miss what the whole model adds (BERT: embeddings, head, dispatch; CNN:
    residual adds, pools), mostly in proportion to the work; BERT groups by hidden width, CNNs
    have one group. Medians of ratios, not least squares: on a shared machine a few
    measurements are far off and a fitted offset chases them (an additive median offset went
    negative and did worse on held-out subnets). Key 0 is the fallback for groups with no
    sample. The additive fixed parts stay zero.
    """
    ratios: dict[int, list[float]] = {}
    for subnet, ms in zip(subnets, measured):
        layers = model._layers_ms(subnet)
        ratios.setdefault(model._family.calibration_group(subnet), []).append(ms / layers)
        if model._family.calibration_group(subnet) != 0:
            ratios.setdefault(0, []).append(ms / layers)
    scales = {group: statistics.median(values) for group, values in ratios.items()}
    return scales, {group: 0.0 for group in scales}


def _score(
    model: LatencyModel,
    test: Sequence[SubnetLike],
    measured: Sequence[float],
    spreads: list[float],
) -> dict[str, Any]:
    table_errors = relative_errors([model.predict_table(s) for s in test], measured)
    fitted_errors = relative_errors([model.predict_fitted(s) for s in test], measured)
    return {
        "num_subnets": len(test),
        "table_median_error": statistics.median(table_errors),
        "table_max_error": max(table_errors),
        "predictor_median_error": statistics.median(fitted_errors),
        "predictor_max_error": max(fitted_errors),
        "median_measurement_spread": statistics.median(spreads),
    }
