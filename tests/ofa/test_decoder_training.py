"""Decoder supernets train, resume and are evaluated: causal-LM token blocks through
``datasets``, per-token distillation (KL with temperature on the teacher's logits), width
multipliers, perplexity and next-token accuracy with shared weights."""

from __future__ import annotations

import copy
import json
import math

import datasets
import pytest
import torch
import torch.nn.functional as F

import ofa
from ofa.data_text import load_text_blocks, pack_blocks, train_tokenizer
from ofa.training.loop import _subnets
from tests.ofa.test_decoder_family import make_decoder

TEXTS = [
    "the film was a quiet delight from start to finish",
    "a tedious plot and wooden acting sink this one",
    "the cast is superb and the score lifts every scene",
    "i left the cinema bored and a little annoyed",
] * 30


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300, min_frequency=1)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _blocks(tokenizer, size: int = 16) -> datasets.Dataset:
    return load_text_blocks(TEXTS, tokenizer, block_size=size)


def _decoder(tokenizer, seed: int = 0):
    return make_decoder("llama", seed=seed, vocab_size=len(tokenizer))


def test_blocks_pack_the_token_stream_from_every_source(tmp_path, tokenizer):
    eos = tokenizer.eos_token_id
    stream = []
    for text in TEXTS:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
    blocks = _blocks(tokenizer)
    assert len(blocks) == len(stream) // 16
    flat = [t for row in blocks["input_ids"] for t in row]
    assert flat == stream[: len(flat)]
    assert all(sum(m) == 16 for m in blocks["attention_mask"])
    # the same blocks from a .txt (one document a line), a CSV and a dataset column
    (tmp_path / "t.txt").write_text("\n\n".join(TEXTS) + "\n")
    (tmp_path / "t.csv").write_text("body\n" + "\n".join(TEXTS) + "\n")
    for source, column in (
        (tmp_path / "t.txt", "text"),
        (tmp_path / "t.csv", "body"),
        (datasets.Dataset.from_dict({"text": TEXTS}), "text"),
    ):
        again = load_text_blocks(source, tokenizer, block_size=16, text_column=column)
        assert again["input_ids"] == blocks["input_ids"]
    assert pack_blocks([[1, 2, 3], [4]], 2, separator=0) == [[1, 2], [3, 0], [4, 0]]
    with pytest.raises(ValueError, match="make no block of 100000"):
        load_text_blocks(TEXTS[:2], tokenizer, block_size=100000)
    with pytest.raises(ValueError, match="no column 'review'"):
        load_text_blocks(tmp_path / "t.csv", tokenizer, text_column="review")
    with pytest.raises(ValueError, match="block_size must be at least 2"):
        load_text_blocks(TEXTS, tokenizer, block_size=1)


def test_perplexity_is_the_models_own_next_token_loss(tokenizer):
    model = _decoder(tokenizer)
    supernet = ofa.convert(copy.deepcopy(model))
    blocks = _blocks(tokenizer)
    scores = ofa.perplexity(supernet, supernet.space.max_subnet(), blocks, batch_size=5)
    with torch.no_grad():
        ids = torch.tensor(blocks["input_ids"])
        reference = float(model(input_ids=ids, labels=ids).loss)  # mean over shifted tokens
        logits = model(input_ids=ids).logits
    assert scores.loss == pytest.approx(reference, rel=1e-5)
    assert scores.perplexity == pytest.approx(math.exp(reference), rel=1e-5)
    assert scores.tokens == ids.shape[0] * (ids.shape[1] - 1)
    hits = (logits[:, :-1].argmax(-1) == ids[:, 1:]).float().mean()
    assert scores.accuracy == pytest.approx(float(hits), abs=1e-6)
    # ofa.evaluate reports next-token accuracy for a decoder (higher is better)
    assert ofa.evaluate(supernet, supernet.space.max_subnet(), blocks) == pytest.approx(
        scores.accuracy, abs=1e-6
    )
    # a smaller subnet runs on the shared weights: its own figures, from the same blocks
    small = ofa.perplexity(supernet, supernet.space.min_subnet(), blocks)
    extracted = supernet.extract(supernet.space.min_subnet())
    with torch.no_grad():
        assert small.loss == pytest.approx(
            float(extracted(input_ids=ids, labels=ids).loss), rel=1e-5
        )
    bert = ofa.convert(_tiny_bert())
    with pytest.raises(ValueError, match="perplexity is for decoder"):
        ofa.perplexity(bert, bert.space.max_subnet(), blocks)


def _tiny_bert():
    from tests.ofa.test_train import tiny_bert

    return tiny_bert()


def test_per_token_loss_is_the_kl_of_every_position(tokenizer):
    supernet = ofa.convert(_decoder(tokenizer))
    teacher = _decoder(tokenizer, seed=3)
    batch = {k: torch.tensor(v) for k, v in _blocks(tokenizer)[:4].items()}
    batch["attention_mask"][0, -3:] = 0  # padding: those positions are no target
    family = ofa.families.family_named("decoder")
    with torch.no_grad():
        student_out = supernet(**batch)
        teacher_out = teacher(**batch)
    s, t, labels = family.loss_inputs(student_out, teacher_out, None, batch)
    rows = 4 * 15 - 3
    assert s.logits.shape == (rows, len(tokenizer)) and labels.shape == (rows,)
    config = ofa.DistillConfig(temperature=2.0, alpha=0.5)
    loss, parts = ofa.distill.distillation_loss(s, t, labels, config)
    keep = batch["attention_mask"][:, 1:].bool()
    ce = F.cross_entropy(student_out.logits[:, :-1][keep], batch["input_ids"][:, 1:][keep])
    kl = (
        F.kl_div(
            F.log_softmax(student_out.logits[:, :-1][keep] / 2, -1),
            F.log_softmax(teacher_out.logits[:, :-1][keep] / 2, -1),
            log_target=True,
            reduction="batchmean",
        )
        * 4
    )
    assert parts["ce"] == pytest.approx(float(ce), rel=1e-5)
    assert parts["logit"] == pytest.approx(float(kl), rel=1e-4)
    assert float(loss) == pytest.approx(0.5 * float(ce) + 0.5 * float(kl), rel=1e-4)


def _rows(path):
    return [json.loads(line) for line in open(path)]


def _config(**overrides) -> ofa.TrainConfig:
    base = dict(
        phases=ofa.default_phases(6, hidden=True, width_multipliers=(0.5,)),
        batch_size=4,
        learning_rate=3e-3,
        distill=ofa.DistillConfig(temperature=2.0, alpha=0.5),
        checkpoint_every_steps=2,
    )
    return ofa.TrainConfig(**{**base, **overrides})


def test_train_lowers_the_objective_resumes_exactly_and_logs_eval(tmp_path, tokenizer):
    blocks = _blocks(tokenizer).train_test_split(test_size=0.2, seed=0)
    train, heldout = blocks["train"], blocks["test"]
    teacher = _decoder(tokenizer)
    supernet = ofa.convert(copy.deepcopy(teacher))
    space = supernet.space
    before = {
        name: ofa.perplexity(supernet, s, train).loss
        for name, s in (("max", space.max_subnet()), ("min", space.min_subnet()))
    }
    # the width multiplier is trained every step beside the sandwich
    phase = ofa.PhaseConfig(
        name="w", steps=1, num_heads="all", ffn_dims="all", width_multipliers=(0.5,)
    )
    drawn = _subnets(phase, supernet, torch.Generator().manual_seed(0))
    half = drawn[2]
    assert set(half.ffn_dims) == {min(d for d in space.ffn_dims if d >= 0.5 * space.ffn_dims[-1])}
    config = _config(phases=ofa.default_phases(12, width_multipliers=(0.5,)))
    ofa.train_(
        supernet,
        teacher=teacher,
        train_data=train,
        eval_data=heldout,
        config=config,
        output_dir=tmp_path / "whole",
        progress=False,
    )
    after = {
        name: ofa.perplexity(supernet, s, train).loss
        for name, s in (("max", space.max_subnet()), ("min", space.min_subnet()))
    }
    assert after["min"] < before["min"] - 0.1, (before, after)
    assert math.isfinite(after["max"])
    rows = _rows(tmp_path / "whole" / "metrics.jsonl")
    evals = [r for r in rows if "eval" in r]
    assert len(evals) == len(config.phases)
    assert all(0.0 <= r["eval"]["max"] <= 1.0 and 0.0 <= r["eval"]["min"] <= 1.0 for r in evals)
    # stopped after 5 steps and resumed: the same run
    part = ofa.convert(copy.deepcopy(teacher))
    kwargs = dict(teacher=teacher, train_data=train, config=config, progress=False)
    ofa.train_(part, output_dir=tmp_path / "part", max_steps=6, **kwargs)
    resumed = ofa.convert(_decoder(tokenizer, seed=7))
    ofa.train_(resumed, output_dir=tmp_path / "part", resume=True, **kwargs)
    whole_loss = [r["loss"] for r in rows if "loss" in r]
    part_loss = [r["loss"] for r in _rows(tmp_path / "part" / "metrics.jsonl") if "loss" in r]
    assert part_loss == pytest.approx(whole_loss, rel=1e-4, abs=1e-5)
    for (name, a), b in zip(supernet.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_training_refusals(tmp_path, tokenizer):
    blocks = _blocks(tokenizer)
    supernet = ofa.convert(_decoder(tokenizer))
    config = _config()
    with pytest.raises(ValueError, match="'labels' column"):
        ofa.train_(
            supernet,
            teacher=None,
            train_data=blocks.add_column("labels", [0] * len(blocks)),
            config=dataclasses_replace(config, distill=ofa.DistillConfig(alpha=1.0)),
            output_dir=tmp_path / "x",
        )
    with pytest.raises(ValueError, match="token blocks"):
        ofa.train_(
            supernet, teacher=None, train_data=[1, 2], config=config, output_dir=tmp_path / "x"
        )
    bare = ofa.convert(make_decoder("llama-bare", vocab_size=len(tokenizer)))
    with pytest.raises(ValueError, match="bare decoder has no LM head"):
        ofa.train_(
            bare,
            teacher=None,
            train_data=blocks,
            config=dataclasses_replace(config, distill=ofa.DistillConfig(alpha=1.0)),
            output_dir=tmp_path / "bare",
            progress=False,
        )


def dataclasses_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)
