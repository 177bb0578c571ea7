"""2:4 exports: magnitude masks, equality with the masked supernet, fixed masks, bad shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import export
from export.sparsity import (
    SparsityConfig,
    apply_2_4_,
    choose_semi_structured,
    is_2_4,
    mask_2_4,
    to_semi_structured_,
)
from export.verification import compare
from ofa.space import Subnet
from tests.export.conftest import make_supernet
from tests.tiny import make_inputs

# hidden 64, FFN 128, 4 heads of 16: shapes the 2:4 kernels take (out % 32, in % 64)
WIDE = dict(hidden_size=64, intermediate_size=128)


@pytest.fixture
def wide():
    return make_supernet(**WIDE)


def _subnet(supernet, heads=(4, 4, 4)) -> Subnet:
    space = supernet.space
    return Subnet(
        layers=space.layers_for(3), num_heads=heads, ffn_dims=(64, 128, 64), hidden_size=64
    )


def test_mask_keeps_the_two_largest_of_every_four():
    weight = torch.tensor([[1.0, -4.0, 3.0, 0.5, 0.1, 0.2, -0.3, 0.4]])
    mask = mask_2_4(weight)
    assert mask.tolist() == [[False, True, True, False, False, False, True, True]]
    assert is_2_4(weight * mask) and not is_2_4(weight)


def test_sparse_export_equals_masked_supernet(wide, tmp_path):
    subnet = _subnet(wide)
    out = export.save(wide, subnet, tmp_path / "sparse", sparsity="2:4")
    manifest = export.read_manifest(out)
    sparsity = manifest["sparsity"]
    assert len(sparsity["layers"]) == 3 * 6 and sparsity["dense_layers"] == []
    assert not any("classifier" in n or "pooler" in n for n in sparsity["layers"])
    model = export.load(out)  # on CPU: dense with zeros, said once in the log
    modules = dict(model.named_modules())
    for name in sparsity["layers"]:
        weight = modules[name].weight
        assert is_2_4(weight) and int((weight == 0).sum()) >= weight.numel() // 2
    assert manifest["params_nonzero"] < manifest["params"]
    result = export.verify(out, wide, subnet)
    assert result.reference == "masked supernet" and result.max_abs_diff <= 1e-5
    with wide.using(subnet):  # and it is not the unmasked supernet
        assert compare(model, wide, vocab_size=model.config.vocab_size) > 1e-4  # 10x the bound


def test_default_layers_skip_shapes_the_kernels_cannot_take(wide, tmp_path):
    subnet = _subnet(wide, heads=(2, 4, 4))  # layer 0's attention output has in_features 32
    out = export.save(wide, subnet, tmp_path / "sparse", sparsity="2:4")
    sparsity = export.read_manifest(out)["sparsity"]
    assert sparsity["dense_layers"] == ["bert.encoder.layer.0.attention.output.dense"]
    assert "bert.encoder.layer.0.attention.output.dense" not in sparsity["layers"]


def test_named_layer_of_a_bad_shape_is_refused(wide, tmp_path):
    subnet = _subnet(wide, heads=(2, 4, 4))
    config = SparsityConfig(layers=("*layer.0.attention.output.dense",))
    with pytest.raises(ValueError, match="cannot take layer .* of shape \\(64, 32\\)"):
        export.save(wide, subnet, tmp_path / "bad", sparsity=config)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="matches no Linear"):
        export.save(wide, subnet, tmp_path / "bad", sparsity=SparsityConfig(layers=("nothing",)))


def test_small_model_with_no_kernel_shape_is_refused(tmp_path):
    supernet = make_supernet(intermediate_size=32)  # no layer has in_features % 64 == 0
    with pytest.raises(ValueError, match="without sparsity"):
        export.save(supernet, supernet.space.max_subnet(), tmp_path / "x", sparsity="2:4")


def test_recovery_finetune_keeps_masks_and_moves_toward_the_teacher(tmp_path):
    # larger weights than the default init, so that masking changes the logits noticeably
    supernet = make_supernet(**WIDE, initializer_range=0.3)
    subnet = _subnet(supernet)
    batches = [make_inputs(4, 12, seed=3)]  # one batch: first and last loss are comparable
    config = SparsityConfig(finetune_steps=6, learning_rate=1e-3)
    out = export.save(supernet, subnet, tmp_path / "ft", sparsity=config, finetune_data=batches)
    sparsity = export.read_manifest(out)["sparsity"]
    first, last = sparsity["finetune_loss"]
    assert last < 0.7 * first  # distillation loss toward the dense subnet went down
    model = export.load(out)
    modules = dict(model.named_modules())
    assert all(is_2_4(modules[name].weight) for name in sparsity["layers"])
    result = export.verify(out, supernet, subnet)
    assert result.reference == "masked supernet before fine-tune" and result.atol is None
    with pytest.raises(ValueError, match="finetune_data"):
        export.save(supernet, subnet, tmp_path / "x", sparsity=config)


def test_sparsity_config_json_round_trip():
    config = SparsityConfig(layers=("*.query", "*.key"), finetune_steps=3)
    assert SparsityConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="2:4"):
        SparsityConfig(pattern="1:4")  # type: ignore[arg-type]


def test_unknown_sparsity_is_refused(wide, tmp_path):
    with pytest.raises(ValueError, match="not supported"):
        export.save(wide, _subnet(wide), tmp_path / "x", sparsity="1:4")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="SparsityConfig"):
        export.save(wide, _subnet(wide), tmp_path / "x", sparsity={"pattern": "2:4"})  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_semi_structured_is_a_no_op_on_cpu():
    layer = nn.Sequential(nn.Linear(64, 64))
    apply_2_4_(layer, ["0"])
    assert choose_semi_structured(layer, ["0"]) == {}
    assert to_semi_structured_(layer, ["0"]) == []


@pytest.mark.gpu
def test_semi_structured_kernels_on_cuda(wide, tmp_path):
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("2:4 kernels need compute capability >= 8.0")
    subnet = _subnet(wide)
    out = export.save(wide, subnet, tmp_path / "sparse", sparsity="2:4")
    dense = export.load(out, device="cuda", dtype=torch.float16, semi_structured="off")
    fast = export.load(out, device="cuda", dtype=torch.float16)
    assert isinstance(fast.config.ofa_semi_structured_layers, list)
    inputs = {k: v.cuda() for k, v in make_inputs().items()}
    with torch.no_grad():
        torch.testing.assert_close(
            fast(**inputs).logits, dense(**inputs).logits, atol=1e-2, rtol=0
        )
