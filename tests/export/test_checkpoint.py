"""export.save / load / verify on tiny models: files, manifest, both checkpoint kinds, bad input."""

from __future__ import annotations

import json
import os
import stat

import pytest
import safetensors
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, BertTokenizer

import export
import ofa
from ofa.space import Subnet
from tests.export.conftest import make_supernet, per_layer_subnet, vanilla_subnet
from tests.tiny import main_output, make_inputs


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return main_output(model.eval()(**make_inputs()))


def _supernet_outputs(supernet: ofa.Supernet, subnet: Subnet) -> torch.Tensor:
    with torch.no_grad(), supernet.using(subnet):
        return main_output(supernet(**make_inputs()))


def test_per_layer_export_files_manifest_and_load(supernet, tmp_path):
    subnet = per_layer_subnet(supernet)
    out = export.save(
        supernet, subnet, tmp_path / "small", latency={"ms": 1.5, "device": "cpu"}, accuracy=0.8
    )
    names = {p.name for p in out.iterdir()}
    assert names == {
        "model.safetensors",
        "config.json",
        "subnet.json",
        "manifest.json",
        "modeling_ofa.py",
    }
    manifest = json.loads((out / "manifest.json").read_text())
    assert Subnet.from_dict(manifest["subnet"]) == subnet
    assert Subnet.from_dict(json.loads((out / "subnet.json").read_text())) == subnet
    assert manifest["params"] == supernet.num_params(subnet)
    assert manifest["flops"]["value"] == supernet.flops(subnet, batch_size=1, seq_len=128)
    assert manifest["latency"] == {"ms": 1.5, "device": "cpu"} and manifest["accuracy"] == 0.8
    assert set(manifest["files"]) == names - {"manifest.json"}
    umask = os.umask(0)
    os.umask(umask)  # not the private modes of temporary files
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((out / "config.json").stat().st_mode) == 0o666 & ~umask
    assert manifest["versions"]["transformers"] and manifest["verify"]["max_abs_diff"] <= 1e-5
    with safetensors.safe_open(str(out / "model.safetensors"), "pt") as handle:
        assert Subnet.from_json(handle.metadata()["ofa_subnet"]) == subnet
    model = export.load(out)
    assert type(model).__name__ == "BertForSequenceClassification"
    torch.testing.assert_close(
        _outputs(model), _supernet_outputs(supernet, subnet), atol=1e-5, rtol=0
    )
    result = export.verify(out, supernet, subnet)
    assert result.reference == "supernet" and result.max_abs_diff <= 1e-5


def test_per_layer_export_loads_with_remote_code(supernet, tmp_path):
    subnet = per_layer_subnet(supernet)
    out = export.save(supernet, subnet, tmp_path / "small")
    with pytest.raises(ValueError):  # it really needs the shipped code
        AutoConfig.from_pretrained(out, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True)
    assert type(model).__name__ == "OfaForSequenceClassification"
    heads = [layer.attention.self.query.out_features // 8 for layer in model.bert.encoder.layer]
    assert tuple(heads) == subnet.num_heads
    torch.testing.assert_close(
        _outputs(model), _supernet_outputs(supernet, subnet), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("shrink_hidden", [False, True], ids=["full-hidden", "hidden-16"])
def test_vanilla_subnet_loads_without_remote_code(supernet, tmp_path, shrink_hidden):
    subnet = vanilla_subnet(supernet)
    if shrink_hidden:  # 2 heads of 8 = hidden 16 is still a vanilla BertConfig
        subnet = supernet.space.uniform(depth=2, num_heads=2, ffn_dim=32, hidden_size=16)
    assert export.fits_vanilla(supernet.space, subnet)
    out = export.save(supernet, subnet, tmp_path / "vanilla")
    assert not (out / "modeling_ofa.py").exists()
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config and config["model_type"] == "bert"
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert type(model).__name__ == "BertForSequenceClassification"
    torch.testing.assert_close(
        _outputs(model), _supernet_outputs(supernet, subnet), atol=1e-5, rtol=0
    )
    assert json.loads((out / "manifest.json").read_text())["loads_with"] == "transformers"


def test_fits_vanilla_rules(supernet):
    space = supernet.space
    assert export.fits_vanilla(space, space.max_subnet())
    assert not export.fits_vanilla(
        space, space.uniform(depth=2, num_heads=2, ffn_dim=32, hidden_size=32)
    )
    mixed_ffn = Subnet(
        layers=space.layers_for(2), num_heads=(4, 4), ffn_dims=(16, 32), hidden_size=32
    )
    assert not export.fits_vanilla(space, mixed_ffn)


@pytest.mark.parametrize("kind", ["roberta-cls", "electra-project", "bert", "xlmr-cls"])
def test_other_families_round_trip(kind, tmp_path):
    supernet = make_supernet(kind)
    subnet = per_layer_subnet(supernet)
    out = export.save(supernet, subnet, tmp_path / kind)
    expected = _supernet_outputs(supernet, subnet)
    torch.testing.assert_close(_outputs(export.load(out)), expected, atol=1e-5, rtol=0)
    remote = AutoModel if kind == "bert" else AutoModelForSequenceClassification
    model = remote.from_pretrained(out, trust_remote_code=True)
    assert type(model).__name__ == (
        "OfaModel" if kind == "bert" else "OfaForSequenceClassification"
    )
    torch.testing.assert_close(_outputs(model), expected, atol=1e-5, rtol=0)


def test_tokenizer_files_are_saved_and_hashed(supernet, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film"]))
    tokenizer = BertTokenizer(vocab_file=str(vocab))
    out = export.save(supernet, vanilla_subnet(supernet), tmp_path / "tok", tokenizer=tokenizer)
    manifest = export.read_manifest(out)
    assert "tokenizer_config.json" in manifest["files"]
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(out)
    assert again("good film")["input_ids"] == tokenizer("good film")["input_ids"]


def test_subnet_outside_space_is_refused(supernet, tmp_path):
    bad = Subnet(layers=(0, 1), num_heads=(4, 4), ffn_dims=(64, 64), hidden_size=32)
    with pytest.raises(ValueError, match="outside the search space"):
        export.save(supernet, bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_existing_directory_needs_overwrite(supernet, tmp_path):
    out = export.save(supernet, vanilla_subnet(supernet), tmp_path / "x")
    with pytest.raises(FileExistsError, match="overwrite"):
        export.save(supernet, per_layer_subnet(supernet), out)
    export.save(supernet, per_layer_subnet(supernet), out, overwrite=True)
    assert Subnet.from_dict(export.read_manifest(out)["subnet"]) == per_layer_subnet(supernet)
    assert [p.name for p in tmp_path.iterdir()] == ["x"]  # no temporary directory left behind


@pytest.mark.parametrize("victim", ["model.safetensors", "config.json"])
def test_corrupted_file_is_refused_at_load(supernet, tmp_path, victim):
    out = export.save(supernet, per_layer_subnet(supernet), tmp_path / "x")
    data = bytearray((out / victim).read_bytes())
    data[-2] ^= 0x01
    (out / victim).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        export.load(out)


def test_latency_must_name_its_device(supernet, tmp_path):
    with pytest.raises(ValueError, match="device"):
        export.save(supernet, vanilla_subnet(supernet), tmp_path / "x", latency={"ms": 2.0})


def test_verify_detects_a_different_supernet(supernet, tmp_path):
    subnet = per_layer_subnet(supernet)
    out = export.save(supernet, subnet, tmp_path / "x")
    other = make_supernet(seed=7)
    with pytest.raises(ValueError, match="differ"):
        export.verify(out, other, subnet)
    with pytest.raises(ValueError, match="holds subnet"):
        export.verify(out, supernet, vanilla_subnet(supernet))
