"""PNG plots of a protocol run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

__all__ = ["plot_curves", "plot_tradeoff", "write_plots"]

import math
from collections.abc import Sequence
from pathlib import Path

from lmrec.errors import LmrecError
from lmrec.evaluation.protocols import ProtocolResult


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(result: ProtocolResult, metric: str, path: str | Path, max_k: int = 50) -> Path:
    """metric@k for k = 1..max_k, one line per model (folds pooled)."""
    plt = _plt()
    ks = list(range(1, max_k + 1))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for lab, run in result.runs.items():
        pooled = run.pooled()
        if pooled.hits.shape[1] < max_k:  # ranked to its own cut-off only (re-ranked variants)
            continue
        ax.plot(ks, pooled.curve(metric, ks), label=lab)
    ax.set_xlabel("k")
    ax.set_ylabel(f"{metric}@k")
    ranking = result.sampled or "full ranking"
    ax.set_title(f"{metric}@k, protocol {result.protocol}, {ranking}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_tradeoff(result: ProtocolResult, x: str, y: str, path: str | Path) -> Path:
    """One point per model: accuracy `y` against a beyond-accuracy metric `x`."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for lab, run in result.runs.items():
        s = run.summary()
        if x not in s or y not in s or math.isnan(s[x]) or math.isnan(s[y]):
            continue
        ax.scatter([s[x]], [s[y]])
        ax.annotate(lab, (s[x], s[y]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{y} against {x}, protocol {result.protocol}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def write_plots(
    result: ProtocolResult,
    directory: str | Path,
    metrics: Sequence[str] = ("ndcg", "recall"),
    max_k: int = 50,
) -> list[Path]:
    """metric@k curves for each metric, and accuracy against diversity / coverage / novelty
    when there are at least two models. Returns the files written."""
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LmrecError(f"cannot create plot directory {d}: {exc.strerror}") from None
    out = [plot_curves(result, m, d / f"{m}_at_k.png", max_k) for m in metrics]
    if len(result.runs) >= 2:
        k = result.k[-1] if 10 not in result.k else 10
        first = next(iter(result.runs.values())).summary()
        for x in ("diversity", "coverage", "novelty"):
            if f"{x}@{k}" in first and f"ndcg@{k}" in first:
                out.append(plot_tradeoff(result, f"{x}@{k}", f"ndcg@{k}", d / f"ndcg_vs_{x}.png"))
    return out
