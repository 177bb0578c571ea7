"""Decoder exports: a subnet with one shape in every layer loads as the stock class with a stock
config (no remote code, ``generate()`` works, where ofa cannot be imported); per-layer shapes
ship ``modeling_ofa.py``; every export matches the supernet."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import export
import ofa
from ofa.decoder_space import DecoderSubnet
from tests.ofa.test_decoder_family import (
    KINDS,
    VOCAB,
    decoder_inputs,
    diff,
    elastic_space,
    make_decoder,
    output,
)
from tests.tiny import BLOCK_PROJECT

NEW_TOKENS = 20
PROMPT = torch.tensor([[5, 17, 33, 2, 71, 9, 40, 12]])  # longer than Mistral's window of 5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a shared machine: one thread is many times faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the tiny vocabulary, built offline."""
    vocab = {f"w{i}": i for i in range(VOCAB)}
    model = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=model, unk_token="w0", pad_token="w0")


def _supernet(kind: str) -> ofa.Supernet:
    model = make_decoder(kind, initializer_range=0.2)  # random weights, varied greedy tokens
    supernet = ofa.convert(model, elastic_space(ofa.convert(model))).eval()
    supernet.model.generation_config.max_new_tokens = NEW_TOKENS  # copied into the export
    supernet.model.generation_config.min_new_tokens = NEW_TOKENS
    return supernet


def _stock(supernet: ofa.Supernet) -> DecoderSubnet:
    """Layers dropped; 2 query heads on 1 KV head and one MLP width in every layer."""
    return supernet.space.uniform(
        depth=3, heads_per_kv=2, num_kv_heads=1, ffn_dim=64, hidden_size=48
    )


def _per_layer(supernet: ofa.Supernet) -> DecoderSubnet:
    layers = supernet.space.layers_for(3)
    return DecoderSubnet(
        layers=layers, heads_per_kv=(1, 3, 2), num_kv_heads=(2, 1, 2), ffn_dims=(32, 96, 64),
        hidden_size=48,
    )  # fmt: skip


def _generated(supernet: ofa.Supernet, subnet: DecoderSubnet) -> list[int]:
    """The supernet's greedy tokens for the subnet (its generation config: 20 new tokens)."""
    with torch.no_grad(), supernet.using(subnet):
        return supernet.model.generate(PROMPT, do_sample=False)[0].tolist()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[ofa.Supernet, DecoderSubnet, Path]]:
    """A stock export of each class, and a per-layer Llama export with a tokenizer."""
    out = tmp_path_factory.mktemp("exports")
    found = {}
    for kind in KINDS:
        supernet = _supernet(kind)
        subnet = _stock(supernet)
        found[kind] = (supernet, subnet, export.save(supernet, subnet, out / kind))
    supernet = found["llama"][0]
    subnet = _per_layer(supernet)
    directory = export.save(supernet, subnet, out / "per-layer", tokenizer=_tokenizer())
    found["per-layer"] = (supernet, subnet, directory)
    return found


_CHILD = BLOCK_PROJECT + textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    inputs = {k: torch.tensor(v) for k, v in json.loads(sys.argv[3]).items()}
    prompt = torch.tensor(json.loads(sys.argv[4]))
    results = {}
    for name, remote in json.loads(sys.argv[2]):
        model = AutoModelForCausalLM.from_pretrained(name, trust_remote_code=remote).eval()
        with torch.no_grad():
            logits = model(**inputs).logits.tolist()
            tokens = model.generate(prompt, do_sample=False)[0].tolist()  # its generation config
        encoded = None
        if remote:  # the per-layer export carries the tokenizer
            encoded = AutoTokenizer.from_pretrained(name)("w3 w5").input_ids
        results[name] = {"class": type(model).__name__, "logits": logits, "tokens": tokens,
                         "encoded": encoded}
    print("RESULT" + json.dumps(results))
    """
)


@pytest.mark.slow
def test_exports_load_without_ofa_and_generate_the_supernets_tokens(exported, tmp_path):
    """Stock exports load with no remote code, the per-layer one with it, in a process where
    ofa cannot be imported; each matches the supernet and generates its greedy tokens."""
    inputs = decoder_inputs(batch=2, length=16)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HOME": str(tmp_path),
        "OMP_NUM_THREADS": "1",
    }
    dirs = [[str(d), name == "per-layer"] for name, (_, _, d) in exported.items()]
    completed = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _CHILD, json.dumps(site.getsitepackages()),
         json.dumps(dirs), json.dumps({k: v.tolist() for k, v in inputs.items()}),
         json.dumps(PROMPT.tolist())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "RESULT" in completed.stdout, completed.stdout[-2000:] + completed.stderr[-2000:]
    results = json.loads(completed.stdout.split("RESULT", 1)[1].splitlines()[0])
    classes = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
    classes.update({"mistral": "MistralForCausalLM", "per-layer": "OfaForCausalLM"})
    distinct = set()
    for name, (supernet, subnet, directory) in exported.items():
        got = results[str(directory)]
        assert got["class"] == classes[name]
        with supernet.using(subnet):
            expected = output(supernet, inputs)
        assert float((torch.tensor(got["logits"]) - expected).abs().max()) <= 1e-5
        tokens = _generated(supernet, subnet)
        assert got["tokens"] == tokens and len(tokens) == PROMPT.shape[1] + NEW_TOKENS
        distinct |= set(tokens[PROMPT.shape[1] :])
        if name == "per-layer":  # the tokenizer given to export.save
            assert got["encoded"] == [3, 5]
    assert len(distinct) > 3  # the greedy tokens vary: the comparison means something


def test_stock_config_and_in_process_load(exported):
    supernet, subnet, directory = exported["llama"]
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "llama" and "auto_map" not in config
    assert config["architectures"] == ["LlamaForCausalLM"]
    expected = dict(num_hidden_layers=3, hidden_size=48, num_attention_heads=2,
                    num_key_value_heads=1, intermediate_size=64, head_dim=16)  # fmt: skip
    assert {k: config[k] for k in expected} == expected
    assert not (directory / "modeling_ofa.py").exists()
    manifest = export.read_manifest(directory)
    assert manifest["family"] == "decoder" and manifest["loads_with"] == "transformers"
    assert manifest["params"] == supernet.num_params(subnet)
    generation = json.loads((directory / "generation_config.json").read_text())
    assert generation["max_new_tokens"] == NEW_TOKENS
    for name in ("llama", "qwen2", "mistral", "per-layer"):
        supernet, subnet, directory = exported[name]
        model = export.load(directory)
        assert not model.training and model.generation_config.max_new_tokens == NEW_TOKENS
        with supernet.using(subnet):
            assert diff(model, supernet) <= 1e-5
        checked = export.verify(directory, supernet, subnet)
        assert checked.passed and checked.max_abs_diff <= 1e-5


def test_per_layer_config_ships_the_modeling_file(exported):
    supernet, subnet, directory = exported["per-layer"]
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "ofa_llama" and config["architectures"] == ["OfaForCausalLM"]
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_ofa.OfaForCausalLM"
    assert config["ofa_num_heads"] == [2, 3, 4] and config["ofa_num_kv_heads"] == [2, 1, 2]
    assert (directory / "modeling_ofa.py").exists() and (directory / "tokenizer.json").exists()
    manifest = export.read_manifest(directory)
    assert manifest["loads_with"] == "transformers, trust_remote_code=True"


def test_a_shape_the_stock_config_refuses_goes_per_layer(tmp_path):
    """Llama's config asks hidden_size % num_attention_heads == 0: 32 over 6 heads is not."""
    supernet = ofa.convert(make_decoder("llama")).eval()
    subnet = supernet.space.uniform(
        depth=2, heads_per_kv=3, num_kv_heads=2, ffn_dim=32, hidden_size=32
    )
    directory = export.save(supernet, subnet, tmp_path / "odd")
    assert (directory / "modeling_ofa.py").exists()
    model = export.load(directory)
    assert model.model.layers[0].self_attn.q_proj.out_features == 6 * 16
    assert export.verify(directory, supernet, subnet).passed


def test_options_a_decoder_export_does_not_take(tmp_path):
    supernet = ofa.convert(make_decoder("qwen2")).eval()
    subnet = supernet.space.min_subnet()
    for config in (export.ExportConfig(onnx=True), export.ExportConfig(sparsity="2:4")):
        with pytest.raises(ValueError, match="a decoder export does not take"):
            export.save(supernet, subnet, tmp_path / "refused", config=config)
    assert not (tmp_path / "refused").exists()
