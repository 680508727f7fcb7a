"""The rating task: RMSE, MAE and MSE of rating models on the rated test interactions of a
protocol's splits, mean ± std over folds, per-user paired tests against a baseline and
bootstrap confidence intervals (`lmrec evaluate --task rating`).

Only the rating event's interactions with a value are targets; other events are ignored (the
models ignore them in training too). A store without ratings is refused with a `DataError`.
"""

from __future__ import annotations

__all__ = ["RatingResult", "RatingRun", "rating_errors", "run_rating_protocol"]

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from lmrec.data import Dataset
from lmrec.data.split import Split
from lmrec.errors import LmrecError
from lmrec.evaluation.stats import bootstrap_ci, paired_test


@dataclass
class RatingErrors:
    """Per-user mean squared and absolute errors of one model on one or more test parts."""

    users: np.ndarray
    per_user: dict[str, np.ndarray]
    sq: np.ndarray
    ab: np.ndarray


def rating_errors(model: Any, split: Split, event: str = "rating") -> tuple[RatingErrors, dict]:
    """Errors of a fitted rating model on the rated interactions of split.test, and
    {mse, rmse, mae, ratings}."""
    from lmrec.models.rating import ratings_of

    if not getattr(model, "predicts_ratings", False):
        raise LmrecError(f"model {getattr(model, 'name', model)!r} does not predict ratings")
    r = ratings_of(split.test, event)
    pred = model.predict_ratings(r.user, r.item)
    e = pred - r.value
    sq, ab = e * e, np.abs(e)
    users, inv = np.unique(r.user, return_inverse=True)
    n = np.bincount(inv)
    per_user = {
        "se": np.bincount(inv, sq) / n,
        "ae": np.bincount(inv, ab) / n,
    }
    summary = {
        "mse": float(sq.mean()),
        "rmse": float(np.sqrt(sq.mean())),
        "mae": float(ab.mean()),
        "ratings": len(e),
    }
    return RatingErrors(users, per_user, sq, ab), summary


@dataclass
class RatingRun:
    """One model over the folds: per-fold metrics, fit seconds and the pooled errors."""

    label: str
    folds: list[dict[str, float]] = field(default_factory=list)
    fit_seconds: list[float] = field(default_factory=list)
    errors: list[RatingErrors] = field(default_factory=list)
    ranking: list[dict[str, float | int]] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for m in ("rmse", "mae", "mse"):
            vals = np.array([f[m] for f in self.folds])
            out[m] = float(vals.mean())
            out[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        out["fit_seconds"] = float(np.mean(self.fit_seconds))
        for key in self.ranking[0] if self.ranking else ():
            vals = np.array([float(r[key]) for r in self.ranking])
            out[key] = float(vals.mean())
        return out

    def pooled(self) -> RatingErrors:
        """Per-user errors over all folds (a user's folds averaged by their ratings)."""
        users = np.concatenate([e.users for e in self.errors])
        se = np.concatenate([e.per_user["se"] for e in self.errors])
        ae = np.concatenate([e.per_user["ae"] for e in self.errors])
        u, inv = np.unique(users, return_inverse=True)
        n = np.bincount(inv)
        return RatingErrors(
            u,
            {"se": np.bincount(inv, se) / n, "ae": np.bincount(inv, ae) / n},
            np.concatenate([e.sq for e in self.errors]),
            np.concatenate([e.ab for e in self.errors]),
        )


@dataclass
class RatingResult:
    protocol: str
    folds: int
    runs: dict[str, RatingRun]

    def compare(
        self, baseline: str | None = None, test: Literal["wilcoxon", "ttest"] = "wilcoxon"
    ) -> dict[str, dict[str, Any]]:
        """Per model against the baseline (default: the first): paired tests on the per-user
        squared and absolute errors, and 95% bootstrap CIs of each model's per-user MSE."""
        labels = list(self.runs)
        base = baseline or labels[0]
        if base not in self.runs:
            raise LmrecError(f"--compare {base!r} is not one of the models ({', '.join(labels)})")
        a = self.runs[base].pooled()
        out: dict[str, dict[str, Any]] = {}
        for lab in labels:
            b = self.runs[lab].pooled()
            row: dict[str, Any] = {
                "mse_ci": bootstrap_ci(b.per_user["se"]),
                "mae_ci": bootstrap_ci(b.per_user["ae"]),
            }
            if lab != base:
                row["vs"] = base
                row["se"] = paired_test(a, b, "se", test)
                row["ae"] = paired_test(a, b, "ae", test)
            out[lab] = row
        return out

    def to_json(self, comparison: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {
            "task": "rating",
            "protocol": self.protocol,
            "folds": self.folds,
            "models": {
                lab: {
                    "summary": run.summary(),
                    "per_fold": run.folds,
                    "fit_seconds": run.fit_seconds,
                }
                for lab, run in self.runs.items()
            },
            "comparison": dict(comparison or {}),
        }

    def table(self, comparison: Mapping[str, Any] | None = None) -> str:
        """A plain-text table: RMSE, MAE, MSE (mean ± std over folds), fit time, p-values."""
        head = f"{'model':<14} {'RMSE':>16} {'MAE':>16} {'MSE':>16} {'fit s':>7}"
        extra = sorted({k for r in self.runs.values() for k in r.summary() if "@" in k})
        head += "".join(f" {k:>10}" for k in extra)
        if comparison:
            head += f" {'p (se)':>9}"
        lines = [f"rating task, protocol {self.protocol}, {self.folds} fold(s)", head]
        for lab, run in self.runs.items():
            s = run.summary()
            cells = [f"{s[m]:.4f} ± {s[m + '_std']:.4f}" for m in ("rmse", "mae", "mse")]
            line = (
                f"{lab:<14} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} {s['fit_seconds']:>7.1f}"
            )
            line += "".join(f" {s.get(k, float('nan')):>10.4f}" for k in extra)
            if comparison:
                p = comparison.get(lab, {}).get("se", {}).get("p_value")
                line += f" {'(base)' if p is None else f'{p:.2g}':>9}"
            lines.append(line)
        return "\n".join(lines)


def run_rating_protocol(
    labels: Sequence[str],
    ds: Dataset,
    splits: Sequence[Split],
    *,
    protocol: str,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    ks: Sequence[int] = (),
    on_model: Callable[[str, int, float], None] | None = None,
) -> RatingResult:
    """Fit each rating model on every split's train part and measure its rating errors on
    the rated test interactions (and NDCG / Recall at `ks` of its ranking, when given)."""
    from lmrec.evaluation.runner import evaluate
    from lmrec.models import create_model
    from lmrec.models.rating import ratings_of

    params = params or {}
    models = {lab: create_model(lab, **params.get(lab, {})) for lab in labels}
    for lab, m in models.items():
        if not m.predicts_ratings:
            raise LmrecError(
                f"--task rating: {lab!r} does not predict ratings; rating models: "
                f"{', '.join(rating_model_names())}"
            )
    event = next(iter(models.values())).config.rating_event  # type: ignore[attr-defined]
    ratings_of(ds, event)  # a store without ratings fails here, with what and where
    runs = {lab: RatingRun(lab) for lab in labels}
    for f, split in enumerate(splits):
        for lab in labels:
            model = create_model(lab, **params.get(lab, {}))
            t0 = time.perf_counter()
            model.fit(split.train)
            secs = time.perf_counter() - t0
            if on_model is not None:
                on_model(lab, f, secs)
            err, summary = rating_errors(model, split, event)
            runs[lab].folds.append(summary)
            runs[lab].fit_seconds.append(secs)
            runs[lab].errors.append(err)
            if ks:
                rank = evaluate(model, split, "test", list(ks), metrics=("ndcg", "recall"))
                runs[lab].ranking.append({k: v for k, v in rank.summary().items() if "@" in k})
    return RatingResult(protocol, len(splits), runs)


def rating_model_names() -> list[str]:
    """The registered models that predict ratings."""
    from lmrec.models import get_model_class, model_names

    return [n for n in model_names() if get_model_class(n).predicts_ratings]
