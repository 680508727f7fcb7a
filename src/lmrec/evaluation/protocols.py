"""Protocol driver: split a dataset, fit each model on train, evaluate, aggregate over folds.

Protocols (splitters in `lmrec.data.split`):
- loo: per user, last interaction -> test, second to last -> valid (RecBole's "LS" order).
- temporal: one global time cut (newest 10% test, 10% before it valid).
- random: per-user random 80/10/10.
- kfold: per-user k-fold cross-validation (test = one fold, train = the rest); results are the
  mean and standard deviation over folds.
- cold_users: 20% of users held out entirely; they are ranked from the model's fallback (or
  their attributes, for models that read side information).
- cold_items: 20% of items held out entirely; ranked among the cold items only.

Models are fitted on split.train with `valid=split.valid` (`Recommender.fit`: the models
that stop early watch it, the others ignore it) and tested with history = train + valid, as
RecBole does.
"""

from __future__ import annotations

__all__ = ["PROTOCOLS", "ModelRun", "ProtocolResult", "make_splits", "run_protocol"]

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lmrec.data import Dataset
from lmrec.data.split import (
    Split,
    cold_start_items,
    cold_start_users,
    kfold,
    leave_one_out,
    random_split,
    temporal_split,
)
from lmrec.errors import LmrecError
from lmrec.evaluation.breakdown import compare_breakdowns, pool_breakdowns
from lmrec.evaluation.runner import EvalResult, evaluate
from lmrec.evaluation.stats import bootstrap_ci, paired_test

if TYPE_CHECKING:
    from lmrec.models.base import Recommender
    from lmrec.rerank import RerankConfig

PROTOCOLS = ("loo", "temporal", "random", "kfold", "cold_users", "cold_items")
ModelSpec = str | Callable[[], Any]


def make_splits(ds: Dataset, protocol: str, *, seed: int = 0, folds: int = 5) -> list[Split]:
    """The split(s) of a protocol: one, or `folds` for kfold."""
    p = protocol.replace("-", "_")
    if p == "loo":
        return [leave_one_out(ds)]
    if p == "temporal":
        return [temporal_split(ds)]
    if p == "random":
        return [random_split(ds, seed=seed)]
    if p == "kfold":
        return kfold(ds, folds, seed=seed)
    if p == "cold_users":
        return [cold_start_users(ds, seed=seed)]
    if p == "cold_items":
        return [cold_start_items(ds, seed=seed)]
    raise LmrecError(f"unknown protocol {protocol!r}; available: {', '.join(PROTOCOLS)}")


def fit_on(model: Recommender, split: Split) -> float:
    """Fit on split.train with valid=split.valid (when it has interactions: models that stop
    early watch it, the others ignore it); seconds taken."""
    t0 = time.perf_counter()
    model.fit(split.train, valid=split.valid if split.valid.n_interactions else None)
    return time.perf_counter() - t0


def _pool(results: Sequence[EvalResult]) -> EvalResult:
    """One result over all folds: per-user values concatenated, users keyed (fold, user)."""
    if len(results) == 1:
        return results[0]
    n = max(int(r.users.max()) + 1 if len(r.users) else 0 for r in results)
    users = np.concatenate([f * n + r.users for f, r in enumerate(results)])
    per_user = {k: np.concatenate([r.per_user[k] for r in results]) for k in results[0].per_user}
    r0 = results[0]
    return EvalResult(
        model=r0.model,
        on=r0.on,
        k=r0.k,
        users=users,
        per_user=per_user,
        overall={},
        sampled=r0.sampled,
        candidates=r0.candidates,
        n_candidates=r0.n_candidates,
        seconds=sum(r.seconds for r in results),
        hits=_cat([r.hits for r in results]),
        n_rel=_cat([r.n_rel for r in results]),
        breakdown={
            by: pool_breakdowns([r.breakdown[by] for r in results], n)
            for by in r0.breakdown
            if all(by in r.breakdown for r in results)
        },
    )


def _cat(parts: list[np.ndarray | None]) -> np.ndarray | None:
    return None if any(p is None for p in parts) else np.concatenate(parts)  # type: ignore[arg-type]


@dataclass
class ModelRun:
    """One model under one protocol: its test results per fold (and valid ones if asked)."""

    label: str
    params: dict[str, Any]
    test: list[EvalResult]
    valid: list[EvalResult] = field(default_factory=list)
    fit_seconds: list[float] = field(default_factory=list)

    def summary(self, part: str = "test") -> dict[str, float]:
        """Mean over folds of each metric; with several folds also "metric_std" (sample
        standard deviation over folds, ddof=1)."""
        res = self.test if part == "test" else self.valid
        sums = [r.summary() for r in res]
        out: dict[str, float] = {}
        for key in sums[0]:
            vals = np.array([s[key] for s in sums], dtype=np.float64)
            out[key] = float(np.nanmean(vals)) if not np.isnan(vals).all() else float("nan")
            if len(sums) > 1 and key != "users":
                out[f"{key}_std"] = float(np.nanstd(vals, ddof=1))
        if "users" in out:
            out["users"] = int(sum(s["users"] for s in sums))
        return out

    def pooled(self, part: str = "test") -> EvalResult:
        return _pool(self.test if part == "test" else self.valid)


@dataclass
class ProtocolResult:
    """Every model's runs under one protocol, with paired comparisons against a baseline."""

    protocol: str
    k: tuple[int, ...]
    runs: dict[str, ModelRun]
    folds: int = 1
    sampled: str | None = None
    seed: int = 0

    def compare(
        self,
        baseline: str | None = None,
        metric: str | None = None,
        test: str = "wilcoxon",
        n_boot: int = 1000,
    ) -> dict[str, dict[str, Any]]:
        """Each model against the baseline (default: the first model) on per-user `metric`
        (default NDCG at the smallest k): the model's mean with a bootstrap CI and, for the
        others, the paired test's p-value and a bootstrap CI of the mean per-user difference
        (model - baseline). Folds are pooled: a pair is (fold, user)."""
        labels = list(self.runs)
        base = baseline or labels[0]
        if base not in self.runs:
            raise LmrecError(f"--compare {base!r} is not one of the models: {', '.join(labels)}")
        metric = metric or f"ndcg@{self.k[0]}"
        b = self.runs[base].pooled()
        out: dict[str, dict[str, Any]] = {}
        for lab in labels:
            r = self.runs[lab].pooled()
            if metric not in r.per_user:
                raise LmrecError(f"metric {metric!r} was not measured per user")
            lo, hi = bootstrap_ci(r.per_user[metric], n_boot=n_boot, seed=self.seed)
            entry: dict[str, Any] = {
                "metric": metric,
                "mean": float(np.nanmean(r.per_user[metric])),
                "ci": [lo, hi],
            }
            if lab != base:
                t = paired_test(b, r, metric=metric, test=test)  # type: ignore[arg-type]
                _, ia, ib = np.intersect1d(b.users, r.users, return_indices=True)
                diff = r.per_user[metric][ib] - b.per_user[metric][ia]
                dlo, dhi = bootstrap_ci(diff, n_boot=n_boot, seed=self.seed)
                entry.update(
                    baseline=base,
                    test=test,
                    p_value=t["p_value"],
                    diff=t["diff"],
                    diff_ci=[dlo, dhi],
                )
            out[lab] = entry
        return out

    def breakdown(
        self,
        baseline: str | None = None,
        metric: str | None = None,
        test: str = "wilcoxon",
    ) -> dict[str, list[dict[str, Any]]]:
        """Every breakdown the runs were evaluated with ("popularity", "history"; folds
        pooled) -> rows (bucket, model) with the users, the metric means and, against the
        baseline (default: the first model) on `metric` (default NDCG at the smallest k),
        the ratio and the paired test's p-value per bucket (`compare_breakdowns`), and the
        ranking label ("full" or "sampled: ...")."""
        labels = list(self.runs)
        base = baseline or labels[0]
        if base not in self.runs:
            raise LmrecError(f"--compare {base!r} is not one of the models: {', '.join(labels)}")
        pooled = {lab: run.pooled() for lab, run in self.runs.items()}
        out: dict[str, list[dict[str, Any]]] = {}
        for by in pooled[base].breakdown:
            parts = {lab: r.breakdown[by] for lab, r in pooled.items() if by in r.breakdown}
            rows = compare_breakdowns(
                parts,
                base,
                metric=metric or f"ndcg@{self.k[0]}",
                test=test,  # type: ignore[arg-type]
            )
            # Like every report row, each says how it was ranked (full or sampled).
            out[by] = [{"ranking": self.sampled or "full", **r} for r in rows]
        return out

    def to_dict(self, per_user: bool = False) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "ranking": self.sampled or "full",
            "folds": self.folds,
            "k": list(self.k),
            "seed": self.seed,
            "models": {
                lab: {
                    "params": run.params,
                    "fit_seconds": [round(x, 4) for x in run.fit_seconds],
                    "test": {k: _num(v) for k, v in run.summary().items()},
                    **(
                        {"valid": {k: _num(v) for k, v in run.summary("valid").items()}}
                        if run.valid
                        else {}
                    ),
                    "folds": [r.to_dict(per_user=per_user) for r in run.test],
                }
                for lab, run in self.runs.items()
            },
        }


def _num(v: Any) -> Any:
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


def _resolve(
    models: Sequence[ModelSpec] | Mapping[str, ModelSpec],
    params: Mapping[str, Mapping[str, Any]] | None,
) -> list[tuple[str, Callable[[], Any], dict[str, Any]]]:
    from lmrec.models import create_model

    items = (
        list(models.items())
        if isinstance(models, Mapping)
        else [
            (m if isinstance(m, str) else getattr(m, "__name__", f"model{i + 1}"), m)
            for i, m in enumerate(models)
        ]
    )
    if not items:
        raise LmrecError("no models to evaluate")
    labels = [lab for lab, _ in items]
    if len(set(labels)) != len(labels):
        raise LmrecError(f"model labels must be unique, got {labels}")
    params = dict(params or {})
    unknown = set(params) - set(labels)
    if unknown:
        raise LmrecError(
            f"parameters given for models not evaluated: {', '.join(sorted(unknown))} "
            f"(models: {', '.join(labels)})"
        )
    out = []
    for lab, spec in items:
        p = dict(params.get(lab, {}))
        if isinstance(spec, str):
            create_model(spec, **p)  # validate names and parameters before any fitting

            def factory(spec: str = spec, p: dict[str, Any] = p) -> Any:
                return create_model(spec, **p)
        elif callable(spec):
            if p:
                raise LmrecError(f"model {lab!r} is a factory: pass its parameters to it")
            factory = spec
        else:
            raise LmrecError(f"a model must be a registered name or a factory, got {spec!r}")
        out.append((lab, factory, p))
    return out


def run_protocol(
    models: Sequence[ModelSpec] | Mapping[str, ModelSpec],
    dataset: Dataset,
    protocol: str = "loo",
    k: int | Sequence[int] = 10,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    folds: int = 5,
    metrics: Sequence[str] | None = None,
    valid: bool = False,
    splits: Sequence[Split] | None = None,
    progress: bool = False,
    on_model: Callable[[str, int, float], None] | None = None,
    variants: Mapping[str, Callable[[Any], Any]] | None = None,
    rerank: Mapping[str, RerankConfig] | None = None,
    **eval_kw: Any,
) -> ProtocolResult:
    """Split `dataset` by `protocol`, fit each model on train, evaluate on test (and valid when
    `valid`), keep per-user values. models: registry names, factories returning an unfitted
    model, or {label: name or factory}; params: {label: {param: value}} for named models.
    `splits` reuses splits made beforehand. `variants` {suffix: wrap} also evaluates
    `wrap(fitted model)` (e.g. a diversity re-ranker) as the run "label suffix", on the same
    fit and split, so that the variants can be compared with paired tests; `rerank`
    {suffix: RerankConfig} adds the model re-ranked by each config. Extra keywords go to
    `evaluate` (sampled, sampler, candidates, item_vectors, batch_size)."""
    resolved = _resolve(models, params)
    if not isinstance(dataset, Dataset):
        raise LmrecError(f"run_protocol needs a Dataset, got {type(dataset).__name__}")
    sp_list = (
        list(splits)
        if splits is not None
        else make_splits(dataset, protocol, seed=seed, folds=folds)
    )
    p = protocol.replace("-", "_")
    if p == "cold_items":
        eval_kw.setdefault("candidates", "cold")
    eval_kw.setdefault("seed", seed)
    runs: dict[str, ModelRun] = {}
    sampled_label = None
    variants = dict(variants or {})
    if rerank:
        from lmrec.rerank import diversify

        variants.update({v: functools.partial(diversify, config=c) for v, c in rerank.items()})
    for lab, factory, prm in resolved:
        run = ModelRun(label=lab, params=prm, test=[])
        extra = {v: ModelRun(label=f"{lab} {v}", params=dict(prm), test=[]) for v in variants}
        for f, split in enumerate(sp_list):
            model = factory()
            run.fit_seconds.append(fit_on(model, split))
            for v, wrap in [("", None), *variants.items()]:
                target = run if wrap is None else extra[v]
                scored = model if wrap is None else wrap(model)
                if wrap is not None:
                    target.fit_seconds.append(run.fit_seconds[-1])
                kw = {"metrics": metrics, "progress": progress, "name": target.label, **eval_kw}
                if wrap is not None:
                    # A re-ranked list depends on its length: rank to the cut-off itself, not
                    # to a deeper curve depth whose head would be a different list.
                    kw.pop("depth", None)
                if valid and split.valid.n_interactions:
                    target.valid.append(evaluate(scored, split, "valid", k, **kw))
                res = evaluate(scored, split, "test", k, **kw)
                sampled_label = res.sampled
                target.test.append(res)
            if on_model is not None:
                on_model(lab, f, run.fit_seconds[-1])
        runs[lab] = run
        runs.update({r.label: r for r in extra.values()})
    ks = runs[resolved[0][0]].test[0].k
    return ProtocolResult(
        protocol=p, k=ks, runs=runs, folds=len(sp_list), sampled=sampled_label, seed=seed
    )
