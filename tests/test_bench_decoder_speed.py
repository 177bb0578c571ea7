"""benchmarks/bench_decoder_speed.py on its 2-layer toy, so that it cannot rot: every subnet is
exported as the stock class, timed beside the original and a native model of its shape, and
gets a prefill and a decode row of the shape it was chosen for."""

from __future__ import annotations

import pytest

from benchmarks import bench_decoder_speed as bench
from tests._noise import retry_noisy


def test_the_toy_run_times_each_export_beside_the_original_and_a_native_model():
    rows = retry_noisy(
        lambda: bench.main(["--tiny", "--no-write", "--threads", "1"]), "bench_decoder_speed"
    )
    assert [(r["subnet"], r["phase"].split(" ")[0]) for r in rows] == [
        (label, phase)
        for label in ("75%", "50%", "25%")
        for phase in ("prefill", "decode", "decode")
    ]
    assert [r["phase"].split("batch ")[-1] for r in rows[1:3]] == ["1)", "8)"]
    shares = [float(r["FLOPs"].rstrip("%")) for r in rows[::3]]
    assert shares == sorted(shares, reverse=True)
    for share, target in zip(shares, (75, 50, 25)):
        assert abs(share - target) <= 10, (share, target)
    for row in rows:
        speedup = float(row["speedup (95% interval)"].split("x")[0])
        native = float(row["exported / native time"].split(" ")[0])
        assert speedup > 0 and 0.5 < native < 2.0, row


def test_the_chosen_shapes_keep_every_kv_head_and_shrink_widths_together():
    model = bench.make_model("tiny")
    supernet = bench.ofa.convert(model)
    space = supernet.space
    for share in bench.TARGETS:
        subnet = bench.nearest_uniform(supernet, share, seq=64)
        assert subnet.is_uniform and subnet.depth == space.depths[-1]
        assert subnet.num_kv_heads[0] == space.num_kv_heads[-1]
        fractions = (
            subnet.heads_per_kv[0] / space.heads_per_kv[-1],
            subnet.ffn_dims[0] / space.ffn_dims[-1],
            subnet.hidden_size / space.hidden_sizes[-1],
        )
        assert max(fractions) - min(fractions) <= 0.25 + 1e-9
    # the same budget spent on depth: every width kept, fewer layers
    widest = space.max_subnet()
    deep = bench.nearest_depth(supernet, 0.5, seq=64)
    assert deep.is_uniform and deep.depth < widest.depth
    assert (deep.num_heads, deep.num_kv_heads, deep.ffn_dims, deep.hidden_size) == (
        widest.num_heads[: deep.depth],
        widest.num_kv_heads[: deep.depth],
        widest.ffn_dims[: deep.depth],
        widest.hidden_size,
    )
    with pytest.raises(KeyError):
        bench.make_model("no such size")
