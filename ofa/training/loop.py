"""The training loop: progressive shrinking with distillation, checkpoints and data parallelism."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from torch import nn
from tqdm.auto import tqdm

from ofa._io import clean_leftovers
from ofa.data import epoch_order, pad_collate
from ofa.data_images import ImageData
from ofa.distill import HiddenAdaptor, distillation_loss, evenly_spaced_map
from ofa.evaluation import evaluate, model_outputs
from ofa.families import family_named
from ofa.space import Subnet
from ofa.supernet import Supernet
from ofa.training import parallel
from ofa.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from ofa.training.config import PhaseConfig, TrainConfig
from ofa.training.theseus import theseus_forward

logger = logging.getLogger(__name__)

__all__ = ["train", "TrainResult", "PhasePlan", "plan_phases", "pad_collate"]


@dataclass(frozen=True)
class PhasePlan:
    """A phase placed on the step axis: it runs optimizer steps ``[start, end)``."""

    index: int
    phase: PhaseConfig
    start: int
    end: int


@dataclass(frozen=True)
class TrainResult:
    steps: int
    final_loss: float
    output_dir: Path
    metrics_path: Path


def plan_phases(config: TrainConfig, *, steps_per_epoch: int) -> list[PhasePlan]:
    """Phases from ``config.start_phase`` on, with epochs turned into optimizer steps."""
    plans, start = [], 0
    for index, phase in enumerate(config.phases):
        if index < config.start_phase:
            continue
        steps = phase.steps or max(1, round(phase.epochs * steps_per_epoch))  # type: ignore[operator]
        plans.append(PhasePlan(index, phase, start, start + steps))
        start += steps
    return plans


def _phase_at(plans: list[PhasePlan], step: int) -> PhasePlan:
    return next(p for p in plans if p.start <= step < p.end)


def _lr_lambda(plans: list[PhasePlan], config: TrainConfig) -> Any:
    def factor(step: int) -> float:
        plan = next((p for p in plans if p.start <= step < p.end), plans[-1])
        peak = (plan.phase.learning_rate or config.learning_rate) / config.learning_rate
        length = plan.end - plan.start
        warmup = math.floor(config.warmup_fraction * length)
        local = step - plan.start
        if local < warmup:
            return peak * (local + 1) / (warmup + 1)
        return peak * max(0.0, (length - local) / max(1, length - warmup))

    return factor


TrainData = datasets.Dataset | ImageData
Collate = Callable[[list[int]], dict[str, torch.Tensor]]


def _collate(supernet: Supernet, data: TrainData) -> Collate:
    """How the rows at some indices become one batch: padded tokens, or stacked images."""
    if isinstance(data, ImageData):
        return data.take
    pad_id = getattr(getattr(supernet.model, "config", None), "pad_token_id", None) or 0
    return lambda index: pad_collate(data[index], pad_id)


def _micro_batches(
    size: int, collate: Collate, config: TrainConfig, start: int, device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    """Micro-batches from number ``start`` on; each epoch has its own seeded order."""
    rank, world = parallel.rank_and_world()
    per_epoch = (size // world) // config.batch_size
    epoch, position = divmod(start, per_epoch)
    while True:
        order = epoch_order(size, seed=config.seed, epoch=epoch, rank=rank, world_size=world)
        for b in range(position, per_epoch):
            rows = collate(order[b * config.batch_size : (b + 1) * config.batch_size])
            yield {k: v.to(device) for k, v in rows.items()}
        epoch, position = epoch + 1, 0


def _fixed_subnets(phase: PhaseConfig, supernet: Supernet, space: Any = None) -> list[Subnet]:
    """The subnets ``phase`` trains every step: its subnet; else the sandwich's max and min,
    the width multipliers' subnets, then the anchors (those its part of the space, ``space``
    when given, holds, or all of them with ``anchors_everywhere``)."""
    if phase.subnet is not None:
        return [phase.subnet]
    space = phase.space_for(supernet.space) if space is None else space
    fixed = [space.max_subnet(), space.min_subnet()] if phase.sampling == "sandwich" else []
    for subnet in phase.multiplier_subnets(supernet.space):
        if subnet not in fixed:
            fixed.append(subnet)
    for anchor in phase.anchors:
        if anchor not in fixed and (phase.anchors_everywhere or _holds(space, anchor)):
            fixed.append(anchor)
    return fixed


def _subnets(phase: PhaseConfig, supernet: Supernet, generator: torch.Generator) -> list[Subnet]:
    if phase.subnet is not None:
        return [phase.subnet]
    space = phase.space_for(supernet.space)  # once per step: the fixed and the drawn share it
    drawn = [space.sample(generator) for _ in range(phase.num_random)]
    return [*_fixed_subnets(phase, supernet, space), *drawn]


def _holds(space: Any, subnet: Subnet) -> bool:
    try:
        space.check(subnet)
    except ValueError:
        return False
    return True


def _layer_map(subnet: Subnet, teacher_depth: int, num_layers: int) -> tuple[int, ...]:
    if teacher_depth == num_layers:
        return subnet.layers
    return evenly_spaced_map(subnet.depth, teacher_depth)


class _Step:
    """One optimizer step's forward / backward passes over the sampled subnets."""

    def __init__(
        self,
        supernet: Supernet,
        teacher: nn.Module | None,
        adaptor: nn.Module | None,
        config: TrainConfig,
        device: torch.device,
    ) -> None:
        self.supernet, self.teacher, self.adaptor, self.config = supernet, teacher, adaptor, config
        self.family = family_named(supernet.family_name)
        self.hidden = config.distill.hidden_weight > 0
        self.autocast = device.type == "cuda" and config.bf16
        self.device = device

    def _autocast(self) -> Any:
        if self.autocast:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def teacher_outputs(self, inputs: dict[str, torch.Tensor]) -> Any:
        if self.teacher is None:
            return None
        with torch.no_grad(), self._autocast():
            return model_outputs(self.teacher, inputs, output_hidden_states=self.hidden)

    def run(
        self,
        batch: dict[str, torch.Tensor],
        subnets: list[Subnet],
        scale: float,
        theseus_p: float | None,
    ) -> dict[str, float]:
        labels = batch.get("labels")
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        teacher_out = self.teacher_outputs(inputs)
        # layer counts matter only to hidden-state distillation (BERT-family supernets)
        depth = self.supernet.space.num_layers if self.hidden else 0
        teacher_depth = depth
        if self.teacher is not None and self.hidden:
            teacher_depth = getattr(self.teacher.config, "num_hidden_layers", depth)
        totals: dict[str, float] = {}
        inplace_target = None
        for i, subnet in enumerate(subnets):
            self.supernet.set_subnet(subnet)
            with self._autocast():
                if theseus_p is not None and self.teacher is not None:
                    out = theseus_forward(self.supernet, self.teacher, subnet, inputs, theseus_p)
                else:
                    out = model_outputs(self.supernet, inputs, output_hidden_states=self.hidden)
            target, target_depth = teacher_out, teacher_depth
            if self.config.teacher_mode == "inplace" and i > 0:
                target, target_depth = inplace_target, depth
            if target is None:  # in-place mode without a frozen teacher: max subnet on labels
                config = _hard_labels(self.config)
            else:
                config = self.config.distill
            student_view, target_view, targets = self.family.loss_inputs(
                out, target, labels, inputs
            )
            loss, parts = distillation_loss(
                student_view,
                target_view,
                targets,
                config,
                adaptor=self.adaptor,
                attention_mask=inputs.get("attention_mask"),
                mapping=_layer_map(subnet, target_depth, depth) if self.hidden else None,
            )
            (loss * scale / len(subnets)).backward()
            if self.config.teacher_mode == "inplace" and i == 0:
                inplace_target = _detached(out)
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + value / len(subnets)
            totals.setdefault("loss", 0.0)
            if "loss" not in parts:
                totals["loss"] += float(loss.detach()) / len(subnets)
        return totals


def _hard_labels(config: TrainConfig) -> Any:
    from dataclasses import replace

    return replace(config.distill, alpha=1.0, hidden_weight=0.0)


def _detached(out: Any) -> Any:
    class _Out:
        logits = out.logits.detach()
        hidden_states = (
            None if out.hidden_states is None else [h.detach() for h in out.hidden_states]
        )

    return _Out()


def _check_inputs(
    supernet: Supernet, teacher: nn.Module | None, train_data: Any, config: TrainConfig
) -> None:
    if not isinstance(supernet, Supernet):
        raise TypeError(
            f"train takes an ofa.Supernet, got {type(supernet).__name__}; use ofa.convert"
        )
    family_named(supernet.family_name).check_train_data(
        train_data, config.distill.hidden_weight, config.theseus is not None
    )
    if teacher is None and config.teacher_mode == "frozen" and config.distill.alpha < 1:
        raise ValueError("no teacher: pass teacher=..., or teacher_mode='inplace', or alpha=1.0")
    if config.theseus is not None and teacher is None:
        raise ValueError("BERT-of-Theseus replaces teacher layers: it needs teacher=...")
    _, world = parallel.rank_and_world()
    if len(train_data) // world < config.batch_size:
        raise ValueError(
            f"{len(train_data)} training rows make no full batch of {config.batch_size} per process"
        )
    for plan in config.phases:
        plan.space_for(supernet.space)
        if plan.subnet is not None:
            supernet.space.check(plan.subnet)
        for anchor in plan.anchors:
            try:
                supernet.space.check(anchor)
            except ValueError as error:
                raise ValueError(
                    f"phase {plan.name!r}: anchor {anchor.to_json()} is not in the supernet's "
                    f"space: {error}"
                ) from None
    held = {
        a
        for p in config.phases
        for a in p.anchors
        if p.anchors_everywhere or _holds(p.space_for(supernet.space), a)
    }
    for anchor in {a for p in config.phases for a in p.anchors} - held:
        raise ValueError(
            f"anchor {anchor.to_json()} lies in no phase's part of the space, so it would never "
            "be trained: give it to a phase that makes its dimensions elastic ('all')"
        )


def train_(
    supernet: Supernet,
    *,
    teacher: nn.Module | None,
    train_data: TrainData,
    eval_data: TrainData | None = None,
    config: TrainConfig,
    output_dir: str | os.PathLike,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train every subnet of ``supernet`` at once, in place, by progressive shrinking.

    Args:
        teacher: the frozen fine-tuned model (``None`` with ``teacher_mode="inplace"``).
        train_data / eval_data: tokenized datasets with ``labels`` (see :mod:`ofa.data`) for a
            BERT-family supernet; :class:`ofa.data_images.ImageData` for a CNN. With
            ``eval_data``, the max and min subnets of each phase are evaluated when it ends
            (a CNN subnet after batch-norm calibration on training batches) and written to
            ``metrics.jsonl`` as ``{"step", "phase", "eval": {"max": acc, "min": acc}}``.
        output_dir: receives ``metrics.jsonl`` and ``checkpoint/``.
        resume: continue from ``output_dir/checkpoint`` exactly where it stopped.
        max_steps: stop after this many optimizer steps in total (a later ``resume`` goes on).

    Seeds torch's global generator with ``config.seed`` (dropout), samples subnets from its own
    generator, and leaves the supernet in eval mode on its max subnet. A CNN's batch-norm
    statistics then mix many subnets: calibrate a subnet (:func:`ofa.calibrate_bn_`, or
    ``ofa.evaluate(..., calibration_data=...)``) before evaluating or exporting it.

    Example:
        >>> result = ofa.train_(supernet, teacher=bert, train_data=task_train,
        ...                    config=ofa.TrainConfig(phases=ofa.default_phases(60)),
        ...                    output_dir="runs/train")
    """
    with _frozen(teacher):
        return _train(
            supernet,
            teacher,
            train_data,
            eval_data,
            config,
            output_dir,
            resume,
            max_steps,
            progress,
        )


@contextlib.contextmanager
def _frozen(teacher: nn.Module | None) -> Iterator[None]:
    """The teacher takes no gradients during training; its own flags are restored afterwards."""
    flags = [] if teacher is None else [(p, p.requires_grad) for p in teacher.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def _train(
    supernet: Supernet,
    teacher: nn.Module | None,
    train_data: TrainData,
    eval_data: TrainData | None,
    config: TrainConfig,
    output_dir: str | os.PathLike,
    resume: bool,
    max_steps: int | None,
    progress: bool,
) -> TrainResult:
    rank, world = parallel.setup()
    _check_inputs(supernet, teacher, train_data, config)
    device = parallel.device()
    output_dir = Path(output_dir)
    torch.manual_seed(config.seed)
    supernet.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    adaptor = _make_adaptor(supernet, teacher, config, device)
    params = list(supernet.parameters()) + ([] if adaptor is None else list(adaptor.parameters()))
    optimizer = torch.optim.AdamW(
        params, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    per_epoch = (len(train_data) // world) // (config.batch_size * config.grad_accum_steps)
    plans = plan_phases(config, steps_per_epoch=max(1, per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(plans, config))
    generator = torch.Generator().manual_seed(config.seed)
    step = 0
    if resume:
        step = _resume(output_dir, supernet, adaptor, optimizer, scheduler, generator, config)
    metrics = output_dir / "metrics.jsonl"
    if rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(metrics, step)
    total = plans[-1].end if max_steps is None else min(plans[-1].end, max_steps)
    runner = _Step(supernet, teacher, adaptor, config, device)
    collate = _collate(supernet, train_data)
    batches = _micro_batches(
        len(train_data), collate, config, step * config.grad_accum_steps, device
    )
    bar = tqdm(total=total, initial=step, disable=not progress or rank != 0, desc="train")
    last: dict[str, float] = {"loss": float("nan")}
    started = time.perf_counter()
    while step < total:
        plan = _phase_at(plans, step)
        subnets = _subnets(plan.phase, supernet, generator)
        theseus_p = _theseus_p(config, plan, step)
        parts: dict[str, float] = {}
        for _ in range(config.grad_accum_steps):
            got = runner.run(next(batches), subnets, 1 / config.grad_accum_steps, theseus_p)
            for key, value in got.items():
                parts[key] = parts.get(key, 0.0) + value / config.grad_accum_steps
        parallel.average_gradients(params)
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        last = parallel.average_floats(parts)
        bar.update(1)
        bar.set_postfix(loss=f"{last['loss']:.4f}", phase=plan.phase.name)
        if rank == 0 and (step % config.log_every_steps == 0 or step == total):
            row = {
                "step": step,
                "phase": plan.phase.name,
                "lr": lr,
                **last,
                "subnets": len(subnets),
                "elapsed_s": round(time.perf_counter() - started, 3),
            }
            _append(metrics, row)
        if eval_data is not None and rank == 0 and step == plan.end:
            scores = _evaluate_phase(supernet, plan.phase, eval_data, collate, len(train_data))
            logger.info("end of phase %s: %s", plan.phase.name, scores)
            _append(metrics, {"step": step, "phase": plan.phase.name, "eval": scores})
        every = config.checkpoint_every_steps
        if (every and step % every == 0) or step == total:
            _save(
                output_dir, supernet, adaptor, optimizer, scheduler, generator, config, step, plans
            )
    bar.close()
    # what the phase it ended in trained every step: the search tries these first
    # (Supernet.save keeps them)
    supernet.trained_subnets = tuple(
        _fixed_subnets(_phase_at(plans, max(0, step - 1)).phase, supernet)
    )
    supernet.set_subnet(supernet.space.max_subnet())
    supernet.eval()
    return TrainResult(step, last["loss"], output_dir, metrics)


def _append(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")


def _evaluate_phase(
    supernet: Supernet, phase: PhaseConfig, eval_data: TrainData, collate: Collate, size: int
) -> dict[str, float]:
    """Accuracy of the phase's max and min subnets (CNNs calibrated on 8 training batches)."""
    if phase.subnet is not None:
        subnets = {"subnet": phase.subnet}
    else:
        space = phase.space_for(supernet.space)
        subnets = {"max": space.max_subnet(), "min": space.min_subnet()}
    calibration = None
    if family_named(supernet.family_name).calibrates_batch_norm:
        order = epoch_order(size, seed=12345, epoch=0)[: 8 * 64]
        calibration = [collate(order[i : i + 64]) for i in range(0, len(order), 64)]
    was_training = supernet.training
    # extraction builds modules, whose init draws from the global generator: keep training's
    # random stream (dropout) the same with or without evaluation
    with torch.random.fork_rng(devices=[]):
        scores = {
            name: round(evaluate(supernet, s, eval_data, calibration_data=calibration), 5)
            for name, s in subnets.items()
        }
    supernet.train(was_training)
    return scores


def _make_adaptor(
    supernet: Supernet, teacher: nn.Module | None, config: TrainConfig, device: torch.device
) -> nn.Module | None:
    if config.distill.hidden_weight <= 0:
        return None
    width = supernet.space.max_hidden_size
    teacher_width = getattr(getattr(teacher, "config", None), "hidden_size", width)
    return HiddenAdaptor(width, teacher_width).to(device)


def _theseus_p(config: TrainConfig, plan: PhasePlan, step: int) -> float | None:
    if config.theseus is None:
        return None
    return config.theseus.probability((step - plan.start) / max(1, plan.end - plan.start))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric rows past ``step`` (left by a run that died after its last checkpoint)."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in rows if json.loads(r)["step"] <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(r + "\n" for r in kept))
    os.replace(tmp, path)


def _save(
    output_dir: Path,
    supernet: Supernet,
    adaptor: nn.Module | None,
    optimizer: Any,
    scheduler: Any,
    generator: torch.Generator,
    config: TrainConfig,
    step: int,
    plans: list[PhasePlan],
) -> None:
    rank, _ = parallel.rank_and_world()
    if rank == 0:
        state = {
            "step": step,
            "phase": _phase_at(plans, step - 1).index,
            "config": config.to_dict(),
            "world_size": parallel.rank_and_world()[1],
        }
        save_checkpoint(
            output_dir / CHECKPOINT,
            model=supernet.model,
            adaptor=adaptor,
            optimizer=optimizer,
            scheduler=scheduler,
            generator=generator,
            state=state,
        )
        logger.info("checkpoint at step %d", step)
    parallel.barrier()


def _resume(
    output_dir: Path,
    supernet: Supernet,
    adaptor: nn.Module | None,
    optimizer: Any,
    scheduler: Any,
    generator: torch.Generator,
    config: TrainConfig,
) -> int:
    directory = output_dir / CHECKPOINT
    # the run takes this directory over: a complete copy a killed save moved aside goes back,
    # and the temporaries of writers that died go (a run killed after its last save left one
    # that no later save would remove)
    clean_leftovers(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"nothing to resume: {directory} does not exist (drop --resume)")
    state = load_checkpoint(
        directory,
        model=supernet.model,
        adaptor=adaptor,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=generator,
    )
    if TrainConfig.from_dict(state["config"]) != config:
        raise ValueError(f"{directory} was written with another config: resume with the same one")
    if state["world_size"] != parallel.rank_and_world()[1]:
        raise ValueError(
            f"{directory} was written by {state['world_size']} processes: use as many"
        )
    logger.info("resumed from step %d", state["step"])
    return int(state["step"])


def train(*args: Any, **kwargs: Any) -> TrainResult:
    """The former name of :func:`train_` (which trains its supernet in place); kept for one
    release, with a ``DeprecationWarning``."""
    warnings.warn(
        "ofa.train is now ofa.train_ (it trains the supernet in place): the old name goes in the "
        "next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return train_(*args, **kwargs)
