"""Elastic 2-d convolution: leading output channels, input channels and a shrinkable kernel.

The kernel shrinks as in once-for-all (Cai et al., 2020): a ``k - 2`` kernel is the centre of the
``k`` kernel passed through a learned ``(k-2)^2 x (k-2)^2`` transform, one per shrink step
(7 -> 5 -> 3), each initialised to the identity so a converted model starts from the centre crop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ElasticConv2d",
    "elastic_kernel_sizes",
    "kernel_steps",
    "numeric_padding",
    "transform_name",
]


def numeric_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """The conv's padding as numbers: ``"valid"`` is 0, ``"same"`` is half the dilated kernel
    (``ValueError`` where "same" pads unevenly, for an even dilated kernel)."""
    padding = conv.padding
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(conv.kernel_size, conv.dilation)]
        if any(t % 2 for t in totals):
            raise ValueError(
                "padding='same' with an even kernel pads unevenly: use an odd kernel or an "
                "explicit padding"
            )
        return (totals[0] // 2, totals[1] // 2)
    return (int(padding[0]), int(padding[1]))  # type: ignore[index]


def kernel_steps(kernel_size: int) -> tuple[int, ...]:
    """The kernel sizes a ``kernel_size`` conv can shrink to, largest first: 7 -> (7, 5, 3)."""
    return tuple(range(kernel_size, 2, -2)) if kernel_size % 2 else (kernel_size,)


def transform_name(larger: int, smaller: int) -> str:
    """Name of the learned parameter that maps a centre-cropped ``larger`` kernel to ``smaller``."""
    return f"kernel_transform_{larger}to{smaller}"


def elastic_kernel_sizes(conv: nn.Conv2d) -> tuple[int, ...]:
    """Kernel sizes ``conv`` can run, largest first: all odd sizes down to 3 for an odd square
    kernel of size >= 5 with "same" zero padding; otherwise just its own size."""
    size, dilation = conv.kernel_size[0], conv.dilation[0]
    square = conv.kernel_size[1] == size and conv.dilation[1] == dilation
    try:
        padding = numeric_padding(conv)
    except ValueError:
        return (size,)
    same = padding == (dilation * (size - 1) // 2,) * 2 and conv.padding_mode == "zeros"
    return kernel_steps(size) if square and same and size >= 5 else (size,)


class ElasticConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose leading output channels and kernel size can shrink at run time.

    The input width is read from the input; its channels are the leading input channels, or
    those of ``active_in_index`` when set (a concatenated input whose parts each shrink). The
    output channels are the leading ``active_out_channels``, or those of ``active_out_index``.
    A depthwise conv (``groups == in_channels == out_channels``) keeps one group per active
    input channel; another grouped conv keeps whole groups (the leading ones, as many as the
    input's channels fill). State-dict keys are those of ``nn.Conv2d`` plus one
    ``kernel_transform_{k}to{k-2}`` matrix per shrink step of an odd square kernel of size >= 5
    with "same" padding.

    Example:
        >>> conv = ElasticConv2d.from_dense(nn.Conv2d(8, 16, 5, padding=2))
        >>> conv.active_out_channels, conv.active_kernel_size = 8, 3
        >>> conv(torch.randn(1, 4, 10, 10)).shape
        torch.Size([1, 8, 10, 10])
    """

    active_out_channels: int
    active_kernel_size: int
    active_in_index: Tensor | None = None
    active_out_index: Tensor | None = None

    @classmethod
    def from_dense(cls, dense: nn.Conv2d) -> ElasticConv2d:
        """Wrap ``dense``, sharing its parameters (no copy); ``padding="same"`` or ``"valid"``
        becomes the numbers it stands for."""
        if dense.padding_mode != "zeros":
            raise ValueError(
                "ElasticConv2d needs zero padding: rebuild the conv with padding_mode='zeros' "
                f"(got {dense.padding_mode!r})"
            )
        padding = numeric_padding(dense)
        elastic = cls.__new__(cls)
        elastic.__dict__.update(dense.__dict__)
        elastic._parameters = dict(dense._parameters)
        elastic._buffers = dict(dense._buffers)
        elastic._modules = dict(dense._modules)
        if isinstance(dense.padding, str):
            elastic.padding = padding
            elastic._reversed_padding_repeated_twice = [
                p for p in reversed(padding) for _ in (0, 1)
            ]
        elastic.active_out_channels = dense.out_channels
        elastic.active_kernel_size = dense.kernel_size[0]
        elastic.active_in_index = elastic.active_out_index = None
        for larger, smaller in zip(elastic.kernel_sizes, elastic.kernel_sizes[1:]):
            eye = torch.eye(
                smaller * smaller, dtype=dense.weight.dtype, device=dense.weight.device
            )
            elastic.register_parameter(transform_name(larger, smaller), nn.Parameter(eye))
        return elastic

    @property
    def kernel_sizes(self) -> tuple[int, ...]:
        """Kernel sizes this conv can run, largest first; just the full size when not elastic."""
        return elastic_kernel_sizes(self)

    @property
    def is_depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    def _rows(self, tensor: Tensor) -> Tensor:
        index = self.active_out_index
        if index is not None:
            return tensor.index_select(0, index.to(tensor.device))
        return tensor[: self.active_out_channels]

    def active_groups(self, in_channels: int) -> int:
        """Groups of the active conv for ``in_channels`` inputs."""
        if self.groups == 1:
            return 1
        return in_channels // (self.in_channels // self.groups)

    def active_weight(self, in_channels: int) -> Tensor:
        """The kernel the active subnet uses: sliced channels, transformed smaller kernel."""
        weight = self._rows(self.weight)
        if self.groups == 1:
            index = self.active_in_index
            if index is not None:
                weight = weight.index_select(1, index.to(weight.device))
            else:
                weight = weight[:, :in_channels]
        return self._shrink_kernel(weight, self.active_kernel_size)

    def _shrink_kernel(self, weight: Tensor, kernel_size: int) -> Tensor:
        size = self.kernel_size[0]
        while size > kernel_size:
            smaller = size - 2
            weight = weight[:, :, 1:-1, 1:-1]  # centre crop: (O, I, s, s)
            matrix = getattr(self, transform_name(size, smaller))
            shape = weight.shape
            weight = (weight.reshape(-1, smaller * smaller) @ matrix).reshape(shape)
            size = smaller
        return weight

    def active_padding(self) -> tuple[int, int]:
        shrink = (self.kernel_size[0] - self.active_kernel_size) // 2 * self.dilation[0]
        padding = numeric_padding(self)
        return (padding[0] - shrink, padding[1] - shrink)

    def forward(self, x: Tensor) -> Tensor:
        in_channels = x.shape[1]
        full = self.active_kernel_size == self.kernel_size[0]
        if (
            full
            and self.active_out_channels == self.out_channels
            and in_channels == self.in_channels
            and self.active_in_index is None
            and self.active_out_index is None
        ):
            return self._conv_forward(x, self.weight, self.bias)  # full size: the dense fast path
        weight = self.active_weight(in_channels)
        bias = None if self.bias is None else self._rows(self.bias)
        groups = self.active_groups(in_channels)
        return F.conv2d(x, weight, bias, self.stride, self.active_padding(), self.dilation, groups)

    def extract_for(self, in_channels: int) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` of the active shape for ``in_channels`` inputs."""
        with torch.no_grad():
            weight = self.active_weight(in_channels)
        out, kernel_size = weight.shape[0], self.active_kernel_size
        groups = self.active_groups(in_channels)
        dense = nn.utils.skip_init(  # no random init: every weight is copied below
            nn.Conv2d,
            in_channels,
            out,
            kernel_size,
            stride=self.stride,
            padding=self.active_padding(),
            dilation=self.dilation,
            groups=groups,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        with torch.no_grad():
            dense.weight.copy_(weight)
            if self.bias is not None:
                dense.bias.copy_(self._rows(self.bias))
        return dense

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, active_out_channels={self.active_out_channels}, "
            f"active_kernel_size={self.active_kernel_size}"
        )
