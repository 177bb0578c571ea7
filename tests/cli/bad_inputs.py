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
    Case("no checkpoint at --model", ("convert", "--model", "{d}/nowhere", "--out", "{d}/o1"),
         "is not a transformers checkpoint (no config.json)"),
    Case("a model family ofa cannot convert", ("convert", "--model", "{d}/gpt2", "--out",
         "{d}/o2"), "which ofa cannot convert; supported: BertForSequenceClassification"),
    Case("output directory exists", ("convert", "--model", "{d}/bert", "--out", "{d}/taken"),
         "already exists: pass --overwrite"),
    Case("taylor importance without text", ("convert", "--model", "{d}/bert", "--out", "{d}/o3",
         "--importance", "taylor"), "taylor importance needs --text-csv"),
    Case("search space that does not fit the model", ("convert", "--model", "{d}/bert", "--out",
         "{d}/o4", "--space", "{d}/space_6_layers.json"), "does not fit the model"),
    Case("config file missing", ("convert", "--config", "{d}/missing.yaml"),
         "config file {d}/missing.yaml does not exist"),
    Case("config file with an unknown key", ("convert", "--config", "{d}/unknown_key.json"),
         "has unknown keys ['modle']"),
    Case("config file that does not parse", ("convert", "--config", "{d}/broken.yaml"),
         "does not parse"),
    Case("supernet directory missing", ("export", "--supernet", "{d}/nowhere", "--subnet", "max",
         "--out", "{d}/o5"), "is not a directory"),
    Case("corrupted supernet weights", ("export", "--supernet", "{d}/corrupted", "--subnet",
         "max", "--out", "{d}/o6"), "is corrupted (sha256 mismatch)"),
    Case("subnet outside the space", ("export", "--supernet", "{d}/supernet", "--subnet",
         "{d}/bad_subnet.json", "--out", "{d}/o7"), "subnet is outside the search space"),
    Case("export over an existing directory", ("export", "--supernet", "{d}/supernet",
         "--subnet", "max", "--out", "{d}/taken"), "--overwrite"),
    Case("--subnet best without a search", ("export", "--supernet", "{d}/supernet", "--subnet",
         "best", "--out", "{d}/o8"), "--search"),
    Case("profile on an unknown device", ("profile", "--supernet", "{d}/supernet", "--out",
         "{d}/lat.json", "--device", "tpu"), "unknown device 'tpu'"),
    Case("profile with batch size 0", ("profile", "--supernet", "{d}/supernet", "--out",
         "{d}/lat.json", "--batch-size", "0"), "batch_size"),
    Case("unknown sampler", ("search", "--supernet", "{d}/supernet", "--budget-ms", "5",
         "--data", "{d}/reviews.csv", "--sampler", "grid", "--measure", "--seq-len", "16",
         "--out", "{d}/s1"), "unknown sampler 'grid'"),
    Case("negative budget", ("search", "--supernet", "{d}/supernet", "--budget-ms", "-1",
         "--data", "{d}/reviews.csv", "--measure", "--seq-len", "16", "--out", "{d}/s2"),
         "budget"),
    Case("latency model file missing", ("search", "--supernet", "{d}/supernet", "--budget-ms",
         "5", "--data", "{d}/reviews.csv", "--latency-model", "{d}/missing.json", "--out",
         "{d}/s3"), "missing.json"),
    Case("budget as a fraction above 1", ("search", "--supernet", "{d}/supernet",
         "--budget-fraction", "1.5", "--data", "{d}/reviews.csv", "--measure", "--seq-len", "16",
         "--out", "{d}/s5"), "budget_fraction must be in (0, 1]"),

    Case("storage URL of an unknown kind", ("search", "--supernet", "{d}/supernet",
         "--budget-ms", "10000", "--data", "{d}/reviews.csv", "--measure", "--seq-len", "16",
         "--storage", "bogus://nowhere", "--out", "{d}/s4"), "storage"),
    Case("sequence longer than the model's positions", ("profile", "--supernet", "{d}/supernet",
         "--out", "{d}/lat.json", "--seq-len", "128"), "max_position_embeddings"),
    Case("training data file missing", ("finetune", "--model", "{d}/bert", "--data",
         "{d}/missing.csv", "--out", "{d}/f1"), "missing.csv"),
    Case("label column missing", ("finetune", "--model", "{d}/bert", "--data", "{d}/reviews.csv",
         "--label-column", "stars", "--out", "{d}/f2"), "stars"),
    Case("train without a supernet", ("train", "--supernet", "{d}/nowhere", "--out", "{d}/t1"),
         "nowhere"),
    Case("quickstart budget fraction above 1", ("quickstart", "--budget-fraction", "2", "--out",
         "{d}/q1"), "budget_fraction must be in (0, 1]"),
    Case("CNN supernet trained without image data", ("train", "--supernet", "{d}/cnn", "--out",
         "{d}/t2", "--teacher-mode", "inplace"), "a CNN supernet trains on images"),
    Case("a BERT-only flag on a CNN supernet", ("train", "--supernet", "{d}/cnn", "--out",
         "{d}/t3", "--data", "digits", "--theseus"), "--theseus: only for BERT-family"),
    Case("a later learning rate on a CNN supernet", ("train", "--supernet", "{d}/cnn", "--out",
         "{d}/t6", "--data", "digits", "--later-lr", "1e-5"), "--later-lr: only for BERT-family"),
    Case("image file missing", ("train", "--supernet", "{d}/cnn", "--out", "{d}/t4", "--data",
         "{d}/missing.npz"), "is not 'digits', 'fashion-mnist' or an existing .npz file"),
    Case("image file without labels", ("train", "--supernet", "{d}/cnn", "--out", "{d}/t5",
         "--data", "{d}/no_labels.npz"), "needs arrays 'images' and 'labels'"),
    Case("2:4 sparsity on a CNN", ("export", "--supernet", "{d}/cnn", "--subnet", "max", "--out",
         "{d}/o9", "--sparsity", "2:4"), "only for BERT-family supernets"),
    Case("CNN search without image data", ("search", "--supernet", "{d}/cnn", "--budget-ms", "5",
         "--measure", "--out", "{d}/s5"), "a CNN supernet is scored on images"),
    Case("search without --data on a supernet not made from the demo", ("search", "--supernet",
         "{d}/supernet", "--budget-ms", "10000", "--measure", "--seq-len", "16", "--out",
         "{d}/s6"), "give --data: the supernet {d}/supernet records no training data"),
    Case("train without --data on a supernet not made from the demo", ("train", "--supernet",
         "{d}/supernet", "--out", "{d}/t7"), "give --data: the supernet {d}/supernet records no"),
    Case("export --tokenizer of a directory without one", ("export", "--supernet",
         "{d}/supernet", "--subnet", "max", "--out", "{d}/o10", "--tokenizer", "{d}/bert"),
         "holds no tokenizer (no tokenizer_config.json)"),
)


def build_fixtures(directory: Path) -> None:
    """The files the cases point at: tiny checkpoints, a supernet, broken files."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=40)
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
    space = ofa.SearchSpace.default(num_layers=6, max_num_heads=4, head_dim=8, max_ffn_dim=64,
                                    max_hidden_size=32)
    (directory / "space_6_layers.json").write_text(space.to_json())
    bad = ofa.Subnet(layers=(0, 1), num_heads=(4, 5), ffn_dims=(64, 64), hidden_size=32)
    (directory / "bad_subnet.json").write_text(bad.to_json())
    (directory / "unknown_key.json").write_text(json.dumps({"modle": "x"}))
    (directory / "broken.yaml").write_text("model: [unclosed\n")
    reviews = "".join(f"film {i} was {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(20))
    (directory / "reviews.csv").write_text("text,label\n" + reviews)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10),
    )
    ofa.convert(cnn).save(directory / "cnn")
    np.savez(directory / "no_labels.npz", images=np.zeros((4, 1, 8, 8), dtype=np.float32))
