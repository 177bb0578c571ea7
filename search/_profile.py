"""What profiling measures: random subnets to fit and score, and one layer of every shape."""

from __future__ import annotations

import copy
import logging
from typing import cast

import torch
from torch import nn
from tqdm.auto import tqdm

from ofa.families.bert import reshape_layer_
from ofa.space import SearchSpace, Subnet
from ofa.supernet import Supernet
from search.latency import LatencyTarget, measure_latency

__all__ = ["draw_subnets", "layer_table"]


logger = logging.getLogger(__name__)


def draw_subnets(
    space: SearchSpace, num_train: int, num_test: int, seed: int
) -> tuple[list[Subnet], list[Subnet]]:
    generator = torch.Generator().manual_seed(seed)
    train = [space.max_subnet(), space.min_subnet()]
    seen = set(train)
    drawn: list[Subnet] = []
    for _ in range(100 * (num_train + num_test)):
        if len(drawn) >= num_train + num_test - 2:
            break
        subnet = space.sample(generator)
        if subnet not in seen:
            seen.add(subnet)
            drawn.append(subnet)
    train = list(dict.fromkeys(train))  # a one-subnet space: max is min
    cut = max(0, num_train - 2)
    if len(drawn) < num_train + num_test - 2:  # a small space: share out the subnets it has
        cut = len(drawn) - min(num_test, (len(drawn) + 1) // 2)
    train, test = train + drawn[:cut], drawn[cut:]
    if not test:  # nothing left to hold out: the error is then over the training subnets
        logger.warning(
            "the space holds only %d subnets: the latency model's error is measured on the "
            "subnets it was fitted to, not held out",
            len(train),
        )
        test = list(train)
    return train, test


def layer_table(
    supernet: Supernet, target: LatencyTarget, *, warmup: int, rounds: int, progress: bool
) -> dict[tuple[int, int, int], float]:
    """Latency of one encoder layer for every (heads, FFN width, hidden width), in isolation."""
    space = supernet.space
    table = {}
    keys = [(h, f, d) for d in space.hidden_sizes for h in space.num_heads for f in space.ffn_dims]
    base_layers = {}
    for d in space.hidden_sizes:
        small = supernet.extract(
            space.uniform(
                depth=space.depths[0],
                num_heads=space.num_heads[-1],
                ffn_dim=space.ffn_dims[-1],
                hidden_size=d,
            )
        )
        base_layers[d] = cast(nn.Module, small.base_model.encoder.layer[0])  # type: ignore[union-attr,index]
    for heads, ffn, hidden in tqdm(keys, desc="profile layers", disable=not progress):
        layer = copy.deepcopy(base_layers[hidden])
        reshape_layer_(layer, hidden=hidden, num_heads=heads, head_dim=space.head_dim, ffn_dim=ffn)
        states = torch.randn(target.batch_size, target.seq_len, hidden)
        result = measure_latency(
            layer,
            states,
            device=target.device,
            dtype=target.dtype,
            warmup=warmup,
            rounds=rounds,
            num_threads=target.num_threads,
            repeats=3,
        )
        table[(heads, ffn, hidden)] = result.median_ms
    return table
