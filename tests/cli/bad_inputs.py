"""The bad inputs tried across the CLI, each with the message it must get (exit code 2).

Shared by tests/cli/test_bad_inputs.py (which runs every case) and tools/gen_bad_inputs.py
(which writes docs/BAD_INPUTS.md from the same list).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2Model

import ofa


@dataclass(frozen=True)
class Case:
    what: str
    argv: tuple[str, ...]  # {d} is the fixture directory
    message: str  # a part of the one-line error


CASES = (
    Case(
        "no checkpoint at --model",
        ("convert", "--model", "{d}/nowhere", "--out", "{d}/o1"),
        "is not a transformers checkpoint (no config.json)",
    ),
    Case(
        "a model family ofa cannot convert",
        ("convert", "--model", "{d}/gpt2", "--out", "{d}/o2"),
        "which ofa cannot convert; supported: BertForSequenceClassification",
    ),
    Case(
        "output directory exists",
        ("convert", "--model", "{d}/bert", "--out", "{d}/taken"),
        "already exists: pass --overwrite",
    ),
    Case(
        "taylor importance without text",
        ("convert", "--model", "{d}/bert", "--out", "{d}/o3", "--importance", "taylor"),
        "taylor importance needs --text-csv",
    ),
    Case(
        "search space that does not fit the model",
        (
            "convert",
            "--model",
            "{d}/bert",
            "--out",
            "{d}/o4",
            "--space",
            "{d}/space_6_layers.json",
        ),
        "does not fit the model",
    ),
    Case(
        "config file missing",
        ("convert", "--config", "{d}/missing.yaml"),
        "config file {d}/missing.yaml does not exist",
    ),
    Case(
        "config file with an unknown key",
        ("convert", "--config", "{d}/unknown_key.json"),
        "has unknown keys ['modle']",
    ),
    Case(
        "config file that does not parse",
        ("convert", "--config", "{d}/broken.yaml"),
        "does not parse",
    ),
    Case(
        "supernet directory missing",
        ("export", "--supernet", "{d}/nowhere", "--subnet", "max", "--out", "{d}/o5"),
        "is not a directory",
    ),
    Case(
        "corrupted supernet weights",
        ("export", "--supernet", "{d}/corrupted", "--subnet", "max", "--out", "{d}/o6"),
        "is corrupted (sha256 mismatch)",
    ),
    Case(
        "subnet outside the space",
        (
            "export",
            "--supernet",
            "{d}/supernet",
            "--subnet",
            "{d}/bad_subnet.json",
            "--out",
            "{d}/o7",
        ),
        "subnet is outside the search space",
    ),
    Case(
        "export over an existing directory",
        ("export", "--supernet", "{d}/supernet", "--subnet", "max", "--out", "{d}/taken"),
        "--overwrite",
    ),
    Case(
        "--subnet best without a search",
        ("export", "--supernet", "{d}/supernet", "--subnet", "best", "--out", "{d}/o8"),
        "--search",
    ),
    Case(
        "profile on an unknown device",
        ("profile", "--supernet", "{d}/supernet", "--out", "{d}/lat.json", "--device", "tpu"),
        "unknown device 'tpu'",
    ),
    Case(
        "profile with batch size 0",
        ("profile", "--supernet", "{d}/supernet", "--out", "{d}/lat.json", "--batch-size", "0"),
        "batch_size",
    ),
    Case(
        "unknown sampler",
        (
            "search",
            "--supernet",
            "{d}/supernet",
            "--budget-ms",
            "5",
            "--data",
            "{d}/reviews.csv",
            "--sampler",
            "grid",
            "--measure",
            "--seq-len",
            "16",
            "--out",
            "{d}/s1",
        ),
        "unknown sampler 'grid'",
    ),
    Case(
        "negative budget",
        (
            "search",
            "--supernet",
            "{d}/supernet",
            "--budget-ms",
            "-1",
            "--data",
            "{d}/reviews.csv",
            "--measure",
            "--seq-len",
            "16",
            "--out",
            "{d}/s2",
        ),
        "budget",
    ),
    Case(
        "latency model file missing",
        (
            "search",
            "--supernet",
            "{d}/supernet",
            "--budget-ms",
            "5",
            "--data",
            "{d}/reviews.csv",
            "--latency-model",
            "{d}/missing.json",
            "--out",
            "{d}/s3",
        ),
        "missing.json",
    ),
    Case(
        "budget as a fraction above 1",
        (
            "search",
            "--supernet",
            "{d}/supernet",
            "--budget-fraction",
            "1.5",
            "--data",
            "{d}/reviews.csv",
            "--measure",
            "--seq-len",
            "16",
            "--out",
            "{d}/s5",
        ),
        "budget_fraction must be in (0, 1]",
    ),
    Case(
        "storage URL of an unknown kind",
        (
            "search",
            "--supernet",
            "{d}/supernet",
            "--budget-ms",
            "10000",
            "--data",
            "{d}/reviews.csv",
            "--measure",
            "--seq-len",
            "16",
            "--storage",
            "bogus://nowhere",
            "--out",
            "{d}/s4",
        ),
        "storage",
    ),
    Case(
        "sequence longer than the model's positions",
        ("profile", "--supernet", "{d}/supernet", "--out", "{d}/lat.json", "--seq-len", "128"),
        "max_position_embeddings",
    ),
    Case(
        "training data file missing",
        ("finetune", "--model", "{d}/bert", "--data", "{d}/missing.csv", "--out", "{d}/f1"),
        "missing.csv",
    ),
    Case(
        "label column missing",
        (
            "finetune",
            "--model",
            "{d}/bert",
            "--data",
            "{d}/reviews.csv",
            "--label-column",
            "stars",
            "--out",
            "{d}/f2",
        ),
        "stars",
    ),
    Case(
        "train without a supernet",
        ("train", "--supernet", "{d}/nowhere", "--out", "{d}/t1"),
        "nowhere",
    ),
    Case(
        "quickstart budget fraction above 1",
        ("quickstart", "--budget-fraction", "2", "--out", "{d}/q1"),
        "budget_fraction must be in (0, 1]",
    ),
    Case(
        "CNN supernet trained without image data",
        ("train", "--supernet", "{d}/cnn", "--out", "{d}/t2", "--teacher-mode", "inplace"),
        "a CNN supernet trains on images",
    ),
    Case(
        "a BERT-only flag on a CNN supernet",
        ("train", "--supernet", "{d}/cnn", "--out", "{d}/t3", "--data", "digits", "--theseus"),
        "--theseus: only for BERT-family",
    ),
    Case(
        "image file missing",
        ("train", "--supernet", "{d}/cnn", "--out", "{d}/t4", "--data", "{d}/missing.npz"),
        "is not 'digits', 'fashion-mnist' or an existing .npz file",
    ),
    Case(
        "image file without labels",
        ("train", "--supernet", "{d}/cnn", "--out", "{d}/t5", "--data", "{d}/no_labels.npz"),
        "needs arrays 'images' and 'labels'",
    ),
    Case(
        "2:4 sparsity on a CNN",
        (
            "export",
            "--supernet",
            "{d}/cnn",
            "--subnet",
            "max",
            "--out",
            "{d}/o9",
            "--sparsity",
            "2:4",
        ),
        "only for BERT-family supernets",
    ),
    Case(
        "CNN search without image data",
        ("search", "--supernet", "{d}/cnn", "--budget-ms", "5", "--measure", "--out", "{d}/s5"),
        "a CNN supernet is scored on images",
    ),
    Case(
        "search without --data on a supernet not made from the demo",
        (
            "search",
            "--supernet",
            "{d}/supernet",
            "--budget-ms",
            "10000",
            "--measure",
            "--seq-len",
            "16",
            "--out",
            "{d}/s6",
        ),
        "give --data: the supernet {d}/supernet records no training data",
    ),
    Case(
        "train without --data on a supernet not made from the demo",
        ("train", "--supernet", "{d}/supernet", "--out", "{d}/t7"),
        "give --data: the supernet {d}/supernet records no",
    ),
    Case(
        "export --tokenizer of a directory without one",
        (
            "export",
            "--supernet",
            "{d}/supernet",
            "--subnet",
            "max",
            "--out",
            "{d}/o10",
            "--tokenizer",
            "{d}/bert",
        ),
        "holds no tokenizer (no tokenizer_config.json)",
    ),
    Case(
        "a 0-byte CSV",
        ("finetune", "--data", "{d}/empty.csv", "--out", "{d}/f3"),
        "is empty (0 bytes)",
    ),
    Case(
        "a CSV that is not UTF-8",
        ("finetune", "--data", "{d}/latin1.csv", "--out", "{d}/f4"),
        "is not UTF-8 text",
    ),
    Case(
        "a CSV with a header only",
        ("finetune", "--data", "{d}/header_only.csv", "--out", "{d}/f5"),
        "has a header but no data rows",
    ),
    Case(
        "a text column of numbers",
        ("finetune", "--data", "{d}/numeric_text.csv", "--out", "{d}/f6"),
        "the text column 'text' holds int values",
    ),
    Case(
        "an empty text",
        ("finetune", "--data", "{d}/empty_text.csv", "--out", "{d}/f7"),
        "has an empty text in row",
    ),
    Case(
        "integer labels not numbered from 0",
        ("finetune", "--data", "{d}/labels_1_2.csv", "--out", "{d}/f8"),
        "integer labels must be the class numbers 0..1, got [1, 2]",
    ),
    Case(
        "text column missing",
        ("finetune", "--data", "{d}/reviews.csv", "--text-column", "review", "--out", "{d}/f9"),
        "no column 'review'",
    ),
    Case(
        "data file of an unknown kind",
        ("finetune", "--data", "{d}/notes.txt", "--out", "{d}/f10"),
        "unknown file type '.txt'",
    ),
    Case(
        "a YAML list where a number belongs",
        ("finetune", "--config", "{d}/lr_list.yaml", "--out", "{d}/f11"),
        "--lr must be a number, got [0.001]",
    ),
    Case(
        "--lr nan",
        ("finetune", "--lr", "nan", "--out", "{d}/f12"),
        "--lr must be a positive finite number, got nan",
    ),
    Case(
        "--lr 0 for training",
        ("train", "--supernet", "{d}/supernet", "--lr", "0", "--out", "{d}/t8"),
        "--lr must be a positive finite number",
    ),
    Case(
        "--threads 0",
        ("finetune", "--threads", "0", "--out", "{d}/f13"),
        "--threads must be at least 1",
    ),
    Case(
        "--max-length beyond the model's positions",
        (
            "train",
            "--supernet",
            "{d}/supernet",
            "--data",
            "{d}/reviews.csv",
            "--max-length",
            "64",
            "--out",
            "{d}/t9",
        ),
        "--max-length 64 is beyond the model's 40 positions",
    ),
    Case(
        "--max-length 1",
        ("finetune", "--max-length", "1", "--out", "{d}/f14"),
        "--max-length must be at least 2",
    ),
    Case("--out that is a file", ("finetune", "--out", "{d}/afile"), "is a file, not a directory"),
    Case(
        "--out under a file",
        ("convert", "--model", "{d}/bert", "--out", "{d}/afile/sub"),
        "is a file: pick a path under a directory",
    ),
    Case(
        "string head counts in a subnet JSON",
        (
            "export",
            "--supernet",
            "{d}/supernet",
            "--subnet",
            "{d}/string_heads.json",
            "--out",
            "{d}/o11",
        ),
        "Subnet num_heads entry must be a whole number, got '4'",
    ),
    Case(
        "hidden_size 32.0 in a subnet JSON",
        (
            "export",
            "--supernet",
            "{d}/supernet",
            "--subnet",
            "{d}/float_hidden.json",
            "--out",
            "{d}/o12",
        ),
        "Subnet hidden_size must be a whole number, got 32.0",
    ),
    Case(
        "hidden_size true in a subnet JSON",
        (
            "export",
            "--supernet",
            "{d}/supernet",
            "--subnet",
            "{d}/bool_hidden.json",
            "--out",
            "{d}/o13",
        ),
        "Subnet hidden_size must be a whole number, got True",
    ),
    Case(
        "a subnet JSON lacking a field",
        (
            "export",
            "--supernet",
            "{d}/supernet",
            "--subnet",
            "{d}/no_hidden.json",
            "--out",
            "{d}/o14",
        ),
        "lacks fields ['hidden_size']",
    ),
    Case(
        "a subnet JSON that is a list",
        (
            "export",
            "--supernet",
            "{d}/supernet",
            "--subnet",
            "{d}/list_subnet.json",
            "--out",
            "{d}/o15",
        ),
        "list_subnet.json must hold a JSON object",
    ),
    Case(
        "a search space with a float",
        ("convert", "--model", "{d}/bert", "--out", "{d}/o16", "--space", "{d}/float_space.json"),
        "SearchSpace num_layers must be a whole number",
    ),
    Case(
        "search-space file missing",
        (
            "convert",
            "--model",
            "{d}/bert",
            "--out",
            "{d}/o17",
            "--space",
            "{d}/missing_space.json",
        ),
        "--space file",
    ),
    Case(
        "taylor importance with --batches 0",
        (
            "convert",
            "--model",
            "{d}/bert",
            "--out",
            "{d}/o18",
            "--importance",
            "taylor",
            "--text-csv",
            "{d}/reviews.csv",
            "--batches",
            "0",
        ),
        "--batches must be at least 1",
    ),
    Case(
        "converting a supernet again",
        ("convert", "--model", "{d}/supernet", "--out", "{d}/o19"),
        "is already a supernet (it holds supernet.json)",
    ),
    Case(
        "train --steps 0",
        ("train", "--supernet", "{d}/supernet", "--steps", "0", "--out", "{d}/t10"),
        "--steps must be at least 1",
    ),
    Case(
        "train --min-width above 1",
        ("train", "--supernet", "{d}/supernet", "--min-width", "1.5", "--out", "{d}/t11"),
        "--min-width must be a fraction in [0, 1]",
    ),
    Case(
        "train --grad-accum 0",
        ("train", "--supernet", "{d}/supernet", "--grad-accum", "0", "--out", "{d}/t12"),
        "--grad-accum must be at least 1",
    ),
    Case(
        "train --num-random negative",
        ("train", "--supernet", "{d}/supernet", "--num-random", "-1", "--out", "{d}/t13"),
        "--num-random must be >= 0",
    ),
    Case(
        "train --batch-size 0",
        ("train", "--supernet", "{d}/supernet", "--batch-size", "0", "--out", "{d}/t14"),
        "--batch-size must be at least 1",
    ),
    Case(
        "train --fixed-subnet file missing",
        (
            "train",
            "--supernet",
            "{d}/supernet",
            "--fixed-subnet",
            "{d}/missing_subnet.json",
            "--out",
            "{d}/t15",
        ),
        "--fixed-subnet file",
    ),
    Case(
        "train --anchors file missing",
        (
            "train",
            "--supernet",
            "{d}/supernet",
            "--anchors",
            "{d}/missing_anchors.json",
            "--out",
            "{d}/t15a",
        ),
        "--anchors file",
    ),
    Case(
        "train --flop-budgets with --fixed-subnet",
        (
            "train",
            "--supernet",
            "{d}/supernet",
            "--flop-budgets",
            "0.5",
            "--fixed-subnet",
            "{d}/missing_subnet.json",
            "--out",
            "{d}/t15b",
        ),
        "--flop-budgets sets the default schedule",
    ),
    Case(
        "train --anchors-everywhere without anchors",
        ("train", "--supernet", "{d}/supernet", "--anchors-everywhere", "--out", "{d}/t15f"),
        "--anchors-everywhere trains the anchors",
    ),
    Case(
        "train --fill-budgets without budgets",
        ("train", "--supernet", "{d}/supernet", "--fill-budgets", "--out", "{d}/t15g"),
        "--fill-budgets widens the shapes",
    ),
    Case(
        "train --latency-budgets without --latency-model",
        ("train", "--supernet", "{d}/supernet", "--latency-budgets", "0.5", "--out", "{d}/t15d"),
        "--latency-budgets and --latency-model go together",
    ),
    Case(
        "train --latency-model file missing",
        (
            "train",
            "--supernet",
            "{d}/supernet",
            "--latency-budgets",
            "0.5",
            "--latency-model",
            "{d}/missing_latency.json",
            "--out",
            "{d}/t15e",
        ),
        "--latency-model file",
    ),
    Case(
        "train --flop-budgets not fractions",
        ("train", "--supernet", "{d}/supernet", "--flop-budgets", "50", "--out", "{d}/t15c"),
        "--flop-budgets",
    ),
    Case(
        "train --train-config file missing",
        (
            "train",
            "--supernet",
            "{d}/supernet",
            "--train-config",
            "{d}/missing_train.json",
            "--out",
            "{d}/t16",
        ),
        "--train-config file",
    ),
    Case(
        "finetune --epochs 0",
        ("finetune", "--epochs", "0", "--out", "{d}/f15"),
        "--epochs must be a positive number",
    ),
    Case(
        "finetune --checkpoint-every negative",
        ("finetune", "--checkpoint-every", "-1", "--out", "{d}/f16"),
        "--checkpoint-every must be >= 0",
    ),
    Case(
        "finetune --limit 0",
        ("finetune", "--limit", "0", "--out", "{d}/f17"),
        "--limit must be at least 1 row",
    ),
    Case(
        "finetune from a directory that is not a checkpoint",
        ("finetune", "--model", "{d}/taken", "--out", "{d}/f18"),
        "is not a transformers checkpoint (no config.json)",
    ),
)


def build_fixtures(directory: Path) -> None:
    """The files the cases point at: tiny checkpoints, a supernet, broken files."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
    )
    bert = BertForSequenceClassification(config)
    bert.save_pretrained(directory / "bert")
    GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(
        directory / "gpt2"
    )
    (directory / "taken").mkdir()
    supernet = ofa.convert(bert)
    supernet.save(directory / "supernet")
    supernet.save(directory / "corrupted")
    weights = directory / "corrupted" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    space = ofa.SearchSpace.default(
        num_layers=6, max_num_heads=4, head_dim=8, max_ffn_dim=64, max_hidden_size=32
    )
    (directory / "space_6_layers.json").write_text(space.to_json())
    bad = ofa.Subnet(layers=(0, 1), num_heads=(4, 5), ffn_dims=(64, 64), hidden_size=32)
    (directory / "bad_subnet.json").write_text(bad.to_json())
    (directory / "unknown_key.json").write_text(json.dumps({"modle": "x"}))
    (directory / "broken.yaml").write_text("model: [unclosed\n")
    reviews = "".join(f"film {i} was {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(20))
    (directory / "reviews.csv").write_text("text,label\n" + reviews)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 10),
    )
    ofa.convert(cnn).save(directory / "cnn")
    (directory / "empty.csv").write_bytes(b"")
    (directory / "latin1.csv").write_bytes(
        "text,label\ncaf\u00e9 cr\u00e8me,0\nna\u00efve,1\n".encode("latin-1")
    )
    (directory / "header_only.csv").write_text("text,label\n")
    (directory / "numeric_text.csv").write_text(
        "text,label\n" + "".join(f"{i},{i % 2}\n" for i in range(20))
    )
    (directory / "empty_text.csv").write_text('text,label\ngood,1\n"",0\nbad,0\ngreat,1\n')
    (directory / "labels_1_2.csv").write_text(
        "text,label\n" + "".join(f"film {i},{i % 2 + 1}\n" for i in range(20))
    )
    (directory / "notes.txt").write_text("some notes\n")
    (directory / "lr_list.yaml").write_text("lr: [0.001]\n")
    (directory / "afile").write_text("not a directory\n")
    subnet = {"layers": [0, 1], "num_heads": [4, 4], "ffn_dims": [64, 64], "hidden_size": 32}
    for name, change in (
        ("string_heads", {"num_heads": ["4", "4"]}),
        ("float_hidden", {"hidden_size": 32.0}),
        ("bool_hidden", {"hidden_size": True}),
    ):
        (directory / f"{name}.json").write_text(json.dumps({**subnet, **change}))
    (directory / "no_hidden.json").write_text(
        json.dumps({k: v for k, v in subnet.items() if k != "hidden_size"})
    )
    (directory / "list_subnet.json").write_text(json.dumps([0, 1]))
    float_space = json.loads(supernet.space.to_json())
    float_space["num_layers"] = 2.0
    (directory / "float_space.json").write_text(json.dumps(float_space))
    np.savez(directory / "no_labels.npz", images=np.zeros((4, 1, 8, 8), dtype=np.float32))
