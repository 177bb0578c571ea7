"""Supernet save / load: safetensors + JSON, no pickle, corruption detected."""

from __future__ import annotations

import json

import pytest
import torch

import ofa
from tests.tiny import main_output, make_inputs, make_model


@pytest.mark.parametrize("kind", ["bert-cls", "roberta-cls", "electra-project", "bert"])
def test_save_load_gives_the_same_outputs(tmp_path, kind):
    supernet = ofa.convert(make_model(kind)).eval()
    ofa.reorder_(supernet, ofa.importance.score(supernet, metric="l1"))
    subnet = supernet.space.sample(torch.Generator().manual_seed(4))
    supernet.set_subnet(subnet)
    supernet.save(tmp_path / "sn")
    assert sorted(p.name for p in (tmp_path / "sn").iterdir()) == [
        "config.json",
        "model.safetensors",
        "supernet.json",
    ]
    loaded = ofa.load_supernet(tmp_path / "sn")
    assert loaded.space == supernet.space and loaded.active_subnet == subnet
    inputs = make_inputs()
    for s in (subnet, supernet.space.max_subnet(), supernet.space.min_subnet()):
        supernet.set_subnet(s)
        loaded.set_subnet(s)
        with torch.no_grad():
            torch.testing.assert_close(
                main_output(loaded(**inputs)), main_output(supernet(**inputs)), atol=0, rtol=0
            )


def test_save_replaces_only_its_own_copy_and_never_a_file_it_did_not_write(tmp_path):
    supernet = ofa.convert(make_model("bert-cls"))
    supernet.save(tmp_path / "sn")
    supernet.save(tmp_path / "sn", overwrite=True)  # an earlier output of ours: replaced whole
    assert [p.name for p in tmp_path.iterdir()] == ["sn"]  # no temporary left behind
    (tmp_path / "sn" / "stale.txt").write_text("old")
    with pytest.raises(FileExistsError, match="stale.txt"):
        supernet.save(tmp_path / "sn", overwrite=True)
    assert (tmp_path / "sn" / "stale.txt").read_text() == "old"


def test_missing_and_corrupted_files_give_clear_errors(tmp_path):
    supernet = ofa.convert(make_model("bert-cls"))
    path = supernet.save(tmp_path / "sn")
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.safetensors is corrupted \\(sha256 mismatch\\)"):
        ofa.load_supernet(path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        ofa.load_supernet(path)
    (path / "supernet.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ofa.load_supernet(path)
    (path / "supernet.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a supernet directory"):
        ofa.load_supernet(path)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        ofa.load_supernet(tmp_path / "nowhere")


def test_metadata_is_plain_json_and_names_only_known_classes(tmp_path):
    supernet = ofa.convert(make_model("bert-cls"))
    path = supernet.save(tmp_path / "sn")
    meta = json.loads((path / "supernet.json").read_text())
    assert meta["model_class"] == "BertForSequenceClassification"
    meta["model_class"] = "os.system"
    (path / "supernet.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not a supported model class"):
        ofa.load_supernet(path)


def test_tokenizer_is_saved_in_the_same_atomic_step_and_hash_checked(tmp_path):
    from transformers import AutoTokenizer

    from ofa.embedded import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    supernet = ofa.convert(make_model("bert-cls"))
    path = supernet.save(tmp_path / "sn", tokenizer=tokenizer)
    meta = json.loads((path / "supernet.json").read_text())
    assert "tokenizer_config.json" in meta["sha256"] and "tokenizer.json" in meta["sha256"]
    assert (
        AutoTokenizer.from_pretrained(path)("a test")["input_ids"]
        == tokenizer("a test")["input_ids"]
    )
    supernet.save(path, overwrite=True, tokenizer=tokenizer)  # its own files: replaced whole
    ofa.load_supernet(path)
    (path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="tokenizer.json is corrupted"):
        ofa.load_supernet(path)
