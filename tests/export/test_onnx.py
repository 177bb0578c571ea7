"""ONNX exports: dynamic axes, and outputs that onnxruntime reproduces (the CLI: tests/cli)."""

from __future__ import annotations

import pytest
import torch

import export
from export.onnx import sample_inputs
from tests.export.conftest import per_layer_subnet


def test_onnx_has_dynamic_axes_and_matches_onnxruntime(supernet, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    subnet = per_layer_subnet(supernet)
    out = export.save(supernet, subnet, tmp_path / "x", onnx=True)
    manifest = export.read_manifest(out)
    assert manifest["onnx"]["checked"] and manifest["onnx"]["max_abs_diff"] <= 1e-4
    assert "model.onnx" in manifest["files"]
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    shapes = [tuple(i.shape) for i in session.get_inputs()]
    assert shapes == [("batch", "sequence"), ("batch", "sequence")]
    inputs = sample_inputs(100, batch_size=5, seq_len=21, seed=3)  # not the traced shape
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    with torch.no_grad(), supernet.using(subnet):
        want = supernet.eval()(**inputs).logits
    torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-4, rtol=0)
