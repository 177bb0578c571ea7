"""CnnSearchSpace / CnnSubnet: validation, sampling, JSON round trips."""

from __future__ import annotations

import pytest
import torch

from ofa import CnnSearchSpace, CnnSubnet

SPACE = CnnSearchSpace(
    channel_groups=("stem", "block.0.conv1", "block.1.conv1"),
    channel_choices=((8, 16), (8, 16, 24, 36), (16, 32)),
    stages=("block.0",),
    depth_choices=((1, 2, 3),),
    kernel_convs=("block.1.conv2",),
    kernel_choices=((3, 5, 7),),
    image_size=(28, 28),
)


def test_max_min_and_samples_are_inside() -> None:
    assert SPACE.max_subnet() == CnnSubnet(widths=(16, 36, 32), depths=(3,), kernel_sizes=(7,))
    assert SPACE.min_subnet() == CnnSubnet(widths=(8, 8, 16), depths=(1,), kernel_sizes=(3,))
    generator = torch.Generator().manual_seed(0)
    samples = {SPACE.sample(generator) for _ in range(50)}
    assert len(samples) > 20 and all(SPACE.contains(s) for s in samples)
    assert SPACE.scaled(0.5) == CnnSubnet(widths=(8, 16, 16), depths=(3,), kernel_sizes=(7,))


def test_json_round_trips() -> None:
    assert CnnSearchSpace.from_json(SPACE.to_json()) == SPACE
    subnet = SPACE.sample(torch.Generator().manual_seed(1))
    assert CnnSubnet.from_json(subnet.to_json()) == subnet
    assert hash(CnnSubnet.from_dict(subnet.to_dict())) == hash(subnet)


def test_outside_subnets_are_named() -> None:
    bad = CnnSubnet(widths=(16, 12, 32), depths=(3,), kernel_sizes=(4,))
    problems = SPACE.violations(bad)
    assert len(problems) == 2 and "'block.0.conv1': 12" in problems[0]
    with pytest.raises(ValueError, match="outside the search space"):
        SPACE.check(bad)
    assert SPACE.violations(CnnSubnet(widths=(16,))) == [
        "1 values for 3 channel_groups",
        "0 values for 1 stages",
        "0 values for 1 kernel_convs",
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(channel_choices=((8, 16), (8, 16), (12, 32))), "multiples of 8"),
        (dict(channel_choices=((16, 8), (8, 16), (16, 32))), "strictly increasing"),
        (dict(channel_choices=((8, 16), (8, 16))), "same number of entries"),
        (dict(kernel_choices=((3, 4, 5),)), "must be odd"),
        (dict(image_size=(0, 28)), "image_size"),
        (dict(version=2), "version 2"),
    ],
)
def test_invalid_spaces_are_refused(change: dict, message: str) -> None:
    fields = SPACE.to_dict() | change
    with pytest.raises(ValueError, match=message):
        CnnSearchSpace.from_dict(fields)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown CnnSubnet fields"):
        CnnSubnet.from_dict({"widths": [8], "heads": [1]})
    with pytest.raises(ValueError, match="unknown CnnSearchSpace fields"):
        CnnSearchSpace.from_dict(SPACE.to_dict() | {"colour": 1})
