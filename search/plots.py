"""Pareto plots: a PNG (matplotlib) and an interactive HTML page (Optuna's plotly figure).

Both are optional: when matplotlib or plotly is missing the plot is skipped with a log line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import optuna

from search._study import is_feasible
from search.pareto import SearchResult

logger = logging.getLogger(__name__)

__all__ = ["plot_pareto_html", "plot_pareto_png"]


def _accuracy_label(split: str | None) -> str:
    return "accuracy" if not split else f"accuracy ({split} split)"


def plot_pareto_png(
    study: optuna.Study,
    result: SearchResult,
    path: str | os.PathLike,
    *,
    teacher: tuple[float, float] | None = None,
    split: str | None = None,
) -> Path | None:
    """Every trial (feasible or not), the front, measured latencies and the budget line.

    ``teacher`` is its (accuracy, latency ms), drawn as a marker of its own; ``split`` names
    the split the accuracies are on, in the y-axis label.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no PNG plot (pip install matplotlib)")
        return None
    done = [t for t in study.get_trials(deepcopy=False) if t.values is not None]
    feasible = [t for t in done if is_feasible(t) and t.user_attrs.get("evaluated", True)]
    infeasible = [t for t in done if not is_feasible(t)]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.scatter(
        [t.values[1] for t in feasible],
        [t.values[0] for t in feasible],
        s=12,
        color="0.6",
        label="feasible trials",
    )
    axes.scatter(
        [t.values[1] for t in infeasible],
        [0 for _ in infeasible],
        s=12,
        marker="x",
        color="tab:red",
        alpha=0.4,
        label="over budget (not evaluated)",
    )
    front = sorted(result.pareto, key=lambda p: p.predicted_ms)
    axes.plot(
        [p.predicted_ms for p in front],
        [p.accuracy for p in front],
        "o-",
        color="tab:blue",
        label="Pareto front (predicted ms)",
    )
    measured = [p for p in front if p.measured_ms is not None]
    if measured:
        axes.scatter(
            [p.measured_ms or 0.0 for p in measured],
            [p.accuracy for p in measured],
            marker="s",
            facecolors="none",
            edgecolors="tab:green",
            label="Pareto front (measured ms)",
        )
    if result.best is not None:
        axes.scatter(
            [result.best.measured_ms or result.best.predicted_ms],
            [result.best.accuracy],
            marker="*",
            s=200,
            color="gold",
            edgecolors="black",
            zorder=5,
            label="best within budget",
        )
    if teacher is not None:
        teacher_accuracy, teacher_ms = teacher
        axes.scatter(
            [teacher_ms],
            [teacher_accuracy],
            marker="D",
            s=70,
            color="tab:purple",
            edgecolors="black",
            zorder=6,
            label=f"teacher ({teacher_accuracy:.3f}, {teacher_ms:.2f} ms)",
        )
    axes.axvline(result.budget_ms, color="black", linestyle="--", label="budget")
    axes.set_xlabel(
        f"latency (ms), {result.target.get('device')} {result.target.get('dtype')} "
        f"batch {result.target.get('batch_size')} seq {result.target.get('seq_len')}"
    )
    axes.set_ylabel(_accuracy_label(split))
    axes.set_title(f"{result.study_name}: {result.num_trials} trials")
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    figure.savefig(tmp, dpi=120)
    plt.close(figure)
    os.replace(tmp, path)
    return path


def plot_pareto_html(
    study: optuna.Study,
    path: str | os.PathLike,
    *,
    teacher: tuple[float, float] | None = None,
    split: str | None = None,
) -> Path | None:
    """Optuna's interactive Pareto-front figure, as a self-contained HTML file.

    ``teacher`` (accuracy, latency ms) is added as a trace of its own; ``split`` names the
    split of the accuracy axis.
    """
    try:
        import plotly  # noqa: F401
    except ImportError:
        logger.info("plotly is not installed: no HTML plot (pip install plotly)")
        return None
    if not any(t.values is not None for t in study.get_trials(deepcopy=False)):
        return None
    # infeasible trials are told apart from the constraints Optuna stored with them
    figure = optuna.visualization.plot_pareto_front(
        study, target_names=[_accuracy_label(split), "latency_ms"]
    )
    if teacher is not None:
        import plotly.graph_objects as go

        figure.add_trace(
            go.Scatter(
                x=[teacher[0]],
                y=[teacher[1]],
                mode="markers",
                marker={"symbol": "diamond", "size": 12, "color": "purple"},
                name="teacher",
            )
        )
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.html")
    figure.write_html(str(tmp), include_plotlyjs=True)
    os.replace(tmp, path)
    return path
