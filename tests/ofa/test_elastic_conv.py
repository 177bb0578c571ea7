"""ElasticConv2d and ElasticBatchNorm2d: full size == dense, extract == active, kernel transforms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ofa.elastic.batchnorm import ElasticBatchNorm2d
from ofa.elastic.conv import ElasticConv2d, kernel_steps, transform_name
from tests.ofa._cnn_nets import one_thread, randomize_bn_  # noqa: F401


def _conv(*args, **kwargs) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(*args, **kwargs)


@pytest.mark.parametrize(
    "dense, in_active, out_active, kernel",
    [
        (_conv(8, 16, 3, padding=1), 4, 8, 3),
        (_conv(8, 16, 7, stride=2, padding=3), 8, 16, 3),
        (_conv(8, 16, 5, padding=2, bias=False), 6, 8, 3),
        (_conv(16, 16, 7, padding=3, groups=16), 8, 8, 5),  # depthwise
        (_conv(8, 8, 5, padding=4, dilation=2), 8, 8, 3),  # dilated "same" padding
    ],
    ids=["3x3", "7x7-stride2", "5x5-nobias", "depthwise-7x7", "dilated-5x5"],
)
def test_full_size_equals_dense_and_extract_equals_active(dense, in_active, out_active, kernel):
    elastic = ElasticConv2d.from_dense(dense)
    x = torch.randn(2, dense.in_channels, 12, 12)
    torch.testing.assert_close(elastic(x), dense(x), atol=0, rtol=0)
    elastic.active_out_channels, elastic.active_kernel_size = out_active, kernel
    small_x = x[:, :in_active]
    out = elastic(small_x)
    assert out.shape[1] == out_active and out.shape[2:] == dense(x).shape[2:]
    plain = elastic.extract_for(in_active)
    assert type(plain) is nn.Conv2d and plain.kernel_size == (kernel, kernel)
    torch.testing.assert_close(plain(small_x), out, atol=1e-6, rtol=1e-6)


def test_kernel_transform_shapes_and_identity_start() -> None:
    elastic = ElasticConv2d.from_dense(_conv(4, 6, 7, padding=3))
    assert elastic.kernel_sizes == (7, 5, 3) == kernel_steps(7)
    shapes = {n: tuple(p.shape) for n, p in elastic.named_parameters() if n.startswith("kernel")}
    assert shapes == {transform_name(7, 5): (25, 25), transform_name(5, 3): (9, 9)}
    elastic.active_kernel_size = 3
    weight = elastic.active_weight(4)
    assert weight.shape == (6, 4, 3, 3)
    # identity transforms: the 3x3 kernel is the centre crop of the 7x7 one
    torch.testing.assert_close(weight, elastic.weight[:, :, 2:5, 2:5])


def test_learned_transform_changes_the_small_kernel_only() -> None:
    elastic = ElasticConv2d.from_dense(_conv(4, 6, 5, padding=2))
    x = torch.randn(1, 4, 9, 9)
    full = elastic(x)
    with torch.no_grad():
        getattr(elastic, transform_name(5, 3)).copy_(torch.randn(9, 9))
    torch.testing.assert_close(elastic(x), full)  # the full kernel ignores transforms
    elastic.active_kernel_size = 3
    centre = F.conv2d(x, elastic.weight[:, :, 1:4, 1:4], elastic.bias, padding=1)
    assert not torch.allclose(elastic(x), centre)
    matrix = getattr(elastic, transform_name(5, 3))
    expected = (elastic.weight[:, :, 1:4, 1:4].reshape(-1, 9) @ matrix).reshape(6, 4, 3, 3)
    torch.testing.assert_close(elastic.active_weight(4), expected)


def test_non_elastic_kernels() -> None:
    assert ElasticConv2d.from_dense(_conv(4, 4, 3, padding=1)).kernel_sizes == (3,)
    assert ElasticConv2d.from_dense(_conv(4, 4, 5, padding=0)).kernel_sizes == (5,)  # not "same"
    assert ElasticConv2d.from_dense(_conv(4, 4, (5, 3), padding=(2, 1))).kernel_sizes == (5,)
    with pytest.raises(ValueError, match="padding_mode='zeros'"):
        ElasticConv2d.from_dense(_conv(4, 4, 3, padding=1, padding_mode="reflect"))


def test_state_dict_keys_are_conv_keys_plus_transforms() -> None:
    dense = _conv(4, 6, 5, padding=2)
    elastic = ElasticConv2d.from_dense(dense)
    assert set(elastic.state_dict()) == set(dense.state_dict()) | {transform_name(5, 3)}
    assert elastic.weight is dense.weight  # shared, not copied
    assert transform_name(5, 3) not in dict(dense.named_parameters())


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_batchnorm_slices_leading_channels(training: bool) -> None:
    dense = randomize_bn_(nn.Sequential(nn.BatchNorm2d(8)))[0]
    reference = randomize_bn_(nn.Sequential(nn.BatchNorm2d(5)))[0]
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(reference, name).copy_(getattr(dense, name)[:5])
    elastic = ElasticBatchNorm2d.from_dense(dense)
    elastic.train(training)
    reference.train(training)
    x = torch.randn(4, 5, 3, 3)
    before = dense.running_mean[5:].clone()
    torch.testing.assert_close(elastic(x), reference(x))
    torch.testing.assert_close(dense.running_mean[:5], reference.running_mean)
    torch.testing.assert_close(dense.running_mean[5:], before)  # inactive channels untouched
    plain = elastic.extract_for(5).train(training)
    assert type(plain) is nn.BatchNorm2d and plain.num_features == 5
    full = torch.randn(4, 8, 3, 3)
    torch.testing.assert_close(elastic.eval()(full), dense.eval()(full))
