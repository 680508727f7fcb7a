"""`lmrec evaluate`: compare models under one protocol with full-ranking metrics, paired tests,
bootstrap confidence intervals, JSON / CSV reports and PNG plots."""

from __future__ import annotations

__all__ = ["register"]

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.commands.rerank import add_rerank_options, rerank_config
from lmrec.errors import LmrecError


def _model_params(pairs: list[str] | None, labels: list[str]) -> dict[str, dict[str, Any]]:
    """`--param model.key=value` -> {model: {key: value}}."""
    from lmrec.commands.models import parse_params

    out: dict[str, dict[str, Any]] = {}
    for key, val in parse_params(pairs, where="--param").items():
        model, dot, name = key.partition(".")
        if not dot or not model or not name:
            raise LmrecError(f"--param expects MODEL.NAME=VALUE, got {key!r}")
        if model not in labels:
            raise LmrecError(
                f"--param {key}: {model!r} is not one of the evaluated models ({', '.join(labels)})"
            )
        out.setdefault(model, {})[name] = val
    return out


def _ks(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LmrecError(f"--k expects integers such as 10 or 5,10,20, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise LmrecError(f"--k values must be >= 1, got {text!r}")
    return ks


def _leak(model: Any, split: Any) -> int:
    """How many test (user, item) pairs the saved model's training history already holds."""
    hist = getattr(model, "history", None)
    if hist is None:
        return 0
    t = split.test
    u = model.users.indices(t.users.ids[t.user].tolist())
    i = model.items.indices(t.items.ids[t.item].tolist())
    ok = (u >= 0) & (i >= 0)
    if not ok.any():
        return 0
    m = hist.matrix()
    return int((np.asarray(m[u[ok], i[ok]]).ravel() != 0).sum())


def _saved_runs(dirs: list[str], splits: list[Any], k: list[int], kw: dict[str, Any]):
    from lmrec.evaluation import evaluate
    from lmrec.evaluation.protocols import ModelRun
    from lmrec.models.base import Recommender

    if len(splits) != 1:
        raise LmrecError("--model-dir evaluates one split; use a protocol other than kfold")
    runs: dict[str, ModelRun] = {}
    for d in dirs:
        if not Path(d).exists():
            raise LmrecError(f"--model-dir {d}: no saved model there")
        model = Recommender.load(d)
        leaked = _leak(model, splits[0])
        if leaked:
            print(
                f"lmrec evaluate: warning: the model in {d} was trained on {leaked} of the "
                f"{splits[0].test.n_interactions} test interactions; its scores are optimistic "
                "(train it with `lmrec train --protocol loo` for a fair test)",
                file=sys.stderr,
            )
        label = Path(d).name or d
        if label in runs:
            label = d
        res = evaluate(model, splits[0], "test", k, name=label, **kw)
        runs[label] = ModelRun(label=label, params={"model_dir": d}, test=[res], fit_seconds=[0.0])
    return runs


def _diversity_variants(args: argparse.Namespace) -> dict[str, Any]:
    """--diversity L1,L2,...: each model is also evaluated re-ranked at each setting, as
    {label suffix: `RerankConfig`} (the other re-ranking options are shared)."""
    if not args.diversity:
        return {}
    try:
        levels = [float(x) for x in args.diversity.split(",") if x.strip()]
    except ValueError:
        raise LmrecError(
            f"--diversity takes numbers between 0 and 1, e.g. 0.2,0.4 (got {args.diversity!r})"
        ) from None
    bad = [x for x in levels if not 0 <= x <= 1]
    if bad or not levels:
        raise LmrecError(f"--diversity values must lie in [0, 1], got {args.diversity!r}")
    base = rerank_config(args)
    return {f"{base.method}={x:g}": base.replace(diversity=x) for x in levels}


def _breakdowns(text: str | None) -> list[str]:
    """--breakdown popularity,history -> the names, checked."""
    from lmrec.evaluation.breakdown import BREAKDOWNS

    names = [x.strip() for x in (text or "").split(",") if x.strip()]
    bad = [x for x in names if x not in BREAKDOWNS]
    if bad or (text is not None and not names):
        raise LmrecError(
            f"--breakdown takes {' and/or '.join(BREAKDOWNS)} (comma-separated), got {text!r}"
        )
    return list(dict.fromkeys(names))


def breakdown_csv_path(csv_path: str | Path) -> Path:
    """Where `--csv OUT --breakdown ...` writes the breakdown rows: OUT-breakdown.csv."""
    p = Path(csv_path)
    return p.with_name(f"{p.stem}-breakdown{p.suffix or '.csv'}")


def cmd_rating(args: argparse.Namespace) -> int:
    """`lmrec evaluate --task rating`: RMSE / MAE / MSE of rating models (all of them without
    --models), mean ± std over folds, paired tests against the first (or --compare)."""
    from lmrec.data import snapshot
    from lmrec.evaluation.protocols import make_splits
    from lmrec.evaluation.rating import rating_model_names, run_rating_protocol
    from lmrec.models import create_model

    labels = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    if args.model_dir:
        raise LmrecError("--task rating refits its models; --model-dir is for the ranking task")
    labels = labels or rating_model_names()
    params = _model_params(args.param, labels)
    for lab in labels:
        create_model(lab, **params.get(lab, {}))
    ds = snapshot(args.db)
    protocol = args.protocol.replace("-", "_")
    if protocol == "loo":  # one rating per user says little about rating error
        protocol = "random"
    splits = make_splits(ds, protocol, seed=args.seed, folds=args.folds)
    ks = [] if protocol.startswith("cold") else _ks(args.k)

    def fitted(label: str, fold: int, seconds: float) -> None:
        if not args.quiet:
            where = f" (fold {fold + 1}/{len(splits)})" if len(splits) > 1 else ""
            print(f"lmrec evaluate: {label}{where} fitted in {seconds:.2f} s", file=sys.stderr)

    result = run_rating_protocol(
        labels, ds, splits, protocol=protocol, params=params, ks=ks, on_model=fitted
    )
    comparison = result.compare(args.compare, test=args.test) if len(labels) >= 2 else None
    report = result.to_json(comparison)
    if args.json == "-":
        print(json.dumps(report, indent=2))
        return 0
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(result.table(comparison))
    if args.json:
        print(f"JSON report: {args.json}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.task == "rating":
        return cmd_rating(args)
    from lmrec.data import snapshot
    from lmrec.evaluation import run_protocol
    from lmrec.evaluation.protocols import ProtocolResult, make_splits
    from lmrec.evaluation.report import (
        format_breakdown,
        format_table,
        to_json,
        write_breakdown_csv,
        write_csv,
        write_json,
    )
    from lmrec.evaluation.runner import ACCURACY

    labels = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    if not labels and not args.model_dir:
        raise LmrecError("give --models a,b,c and/or --model-dir DIR")
    ks = _ks(args.k)
    params = _model_params(args.param, labels)
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    if args.sampled is not None and args.sampled < 1:
        raise LmrecError(f"--sampled must be a positive number of negatives, got {args.sampled}")
    if args.plots and max(ks) > 50:
        raise LmrecError("--plots draws metric@k for k = 1..50; use --k values up to 50")
    breakdown = _breakdowns(args.breakdown)
    from lmrec.models import create_model

    for lab in labels:  # unknown names and bad parameters fail before the data is read
        create_model(lab, **params.get(lab, {}))
    ds = snapshot(args.db)
    splits = make_splits(ds, args.protocol, seed=args.seed, folds=args.folds)
    kw: dict[str, Any] = {
        "metrics": metrics,
        "progress": not args.quiet,
        "sampled": args.sampled,
        "sampler": args.sampler,
        "batch_size": args.batch_size,
    }
    if breakdown:
        kw["breakdown"] = breakdown
    if args.ray is not None:
        from lmrec.commands.models import ray_config

        if args.sampled is not None:
            raise LmrecError(
                "--ray ranks the whole catalogue; --sampled draws its negatives in one "
                "process (drop one of them)"
            )
        kw["ray"] = ray_config(args)
    if args.plots:
        kw["depth"] = 50
    if args.protocol.replace("-", "_") == "cold_items":
        kw["candidates"] = "cold"

    variants = _diversity_variants(args)

    def fitted(label: str, fold: int, seconds: float) -> None:
        if not args.quiet:
            where = f" (fold {fold + 1}/{len(splits)})" if len(splits) > 1 else ""
            print(f"lmrec evaluate: {label}{where} fitted in {seconds:.2f} s", file=sys.stderr)

    runs: dict[str, Any] = {}
    result = None
    if labels:
        result = run_protocol(
            labels,
            ds,
            args.protocol,
            ks,
            params=params,
            seed=args.seed,
            splits=splits,
            on_model=fitted,
            rerank=variants,
            **kw,
        )
        runs.update(result.runs)
    if args.model_dir:
        saved = _saved_runs(args.model_dir, splits, ks, kw)
        clash = set(saved) & set(runs)
        if clash:
            raise LmrecError(f"model labels appear twice: {', '.join(sorted(clash))}")
        runs.update(saved)
    first = next(iter(runs.values())).test[0]
    full = ProtocolResult(
        protocol=args.protocol.replace("-", "_"),
        k=first.k,
        runs=runs,
        folds=len(splits),
        sampled=first.sampled,
        seed=args.seed,
    )
    comparison = None
    metric = args.compare_metric or f"ndcg@{ks[0]}"
    if metric not in first.per_user:
        raise LmrecError(
            f"--compare-metric {metric!r} was not measured; per-user metrics: "
            f"{', '.join(first.per_user)}"
        )
    if len(runs) >= 2 or args.compare:
        comparison = full.compare(args.compare, metric=metric, test=args.test)
    by_bucket = None
    if breakdown:
        acc = metric if metric.partition("@")[0] in ACCURACY else f"ndcg@{ks[0]}"
        by_bucket = full.breakdown(args.compare, metric=acc, test=args.test)
    if args.json:
        if args.json == "-":
            print(json.dumps(to_json(full, comparison, args.per_user, by_bucket), indent=2))
        else:
            write_json(full, args.json, comparison, args.per_user, by_bucket)
    bd_csv = None
    if args.csv:
        write_csv(full, args.csv)
        if by_bucket:
            bd_csv = write_breakdown_csv(by_bucket, breakdown_csv_path(args.csv))
    written = []
    if args.plots:
        from lmrec.evaluation.plots import write_plots

        curve = [m for m in (metrics or ["ndcg", "recall"]) if m in ACCURACY] or ["ndcg"]
        written = write_plots(full, args.plots, metrics=curve[:2])
    if args.json != "-":
        print(format_table(full, comparison, metrics))
        if by_bucket:
            print("")
            print(format_breakdown(by_bucket))
        for what, path in (("JSON", args.json), ("CSV", args.csv), ("breakdown CSV", bd_csv)):
            if path:
                print(f"{what} report: {path}")
        for p in written:
            print(f"plot: {p}")
    return 0


def register(
    sub: argparse._SubParsersAction, cmds: dict[str, Callable[[argparse.Namespace], int]]
) -> None:
    """Add `evaluate` to the `lmrec` parser."""
    from lmrec.evaluation.protocols import PROTOCOLS
    from lmrec.models import model_names

    s = sub.add_parser(
        "evaluate",
        help="compare models under a protocol (full ranking, paired tests, reports, plots)",
        description="Split the stored data by a protocol, fit each model on train, rank the "
        "whole catalogue for every test user (their history excluded) and report metrics@k, "
        "a paired test of each model against the first (or --compare) and bootstrap CIs.",
    )
    s.add_argument(
        "--task",
        choices=["ranking", "rating"],
        default="ranking",
        help="ranking (default): full-ranking metrics; rating: RMSE, MAE and MSE of the rating "
        "models on the rated test interactions (every rating model without --models; the "
        "loo protocol becomes random; other events are ignored)",
    )
    s.add_argument("--models", help=f"comma-separated model names ({', '.join(model_names())})")
    s.add_argument("--param", action="append", metavar="MODEL.NAME=VALUE", help="e.g. ease.reg=2")
    s.add_argument(
        "--model-dir",
        action="append",
        metavar="DIR",
        help="also evaluate a saved model (not refitted; train it on the same protocol's "
        "train split, e.g. `lmrec train --protocol loo`)",
    )
    s.add_argument("--protocol", choices=PROTOCOLS, default="loo", help="default loo")
    s.add_argument("--k", default="10", help="cut-off(s), e.g. 10 or 5,10,20 (default 10)")
    s.add_argument(
        "--metrics",
        help="comma-separated: ndcg,recall,precision,hr,mrr,map,f1,auc,coverage,novelty,"
        "diversity,arp,gini,personalization (default: all but auc)",
    )
    s.add_argument(
        "--sampled",
        type=int,
        metavar="N",
        help="rank each user's targets among N sampled negatives instead of the whole "
        "catalogue (labelled 'sampled' everywhere; not comparable with full ranking)",
    )
    s.add_argument("--sampler", choices=["uniform", "popularity"], default="uniform")
    s.add_argument("--folds", type=int, default=5, help="folds of --protocol kfold (default 5)")
    s.add_argument("--seed", type=int, default=0, help="seed of splits, sampling and bootstrap")
    s.add_argument(
        "--compare", metavar="MODEL", help="baseline of the paired tests (default: first)"
    )
    s.add_argument("--compare-metric", metavar="METRIC@K", help="default ndcg@<first k>")
    s.add_argument("--test", choices=["wilcoxon", "ttest"], default="wilcoxon")
    s.add_argument(
        "--breakdown",
        metavar="popularity,history",
        help="also report NDCG and Recall at k by item popularity (head / torso / tail thirds "
        "of the catalogue by training interactions; a user counts with their test items in the "
        "bucket) and/or by training history length (0, 1-4, 5-9, 10-19, 20-49, 50-99, 100-199, "
        "200-499, 500+ interactions, merged up to 5%% of the users), with each model's ratio to "
        "the baseline and the paired test per bucket; rows go to the JSON report ('breakdown') "
        "and, with --csv OUT.csv, to OUT-breakdown.csv",
    )
    s.add_argument("--json", metavar="OUT", help="write a JSON report ('-': print it instead)")
    s.add_argument("--per-user", action="store_true", help="include per-user values in JSON")
    s.add_argument("--csv", metavar="OUT", help="write a CSV report")
    s.add_argument("--plots", metavar="DIR", help="write PNG plots (metric@k, k = 1..50)")
    s.add_argument("--batch-size", type=int, default=1024, help="users ranked per batch")
    s.add_argument(
        "--diversity",
        metavar="L1,L2,...",
        help="also evaluate each model re-ranked for diversity at these settings in [0, 1] "
        "(accuracy and diversity side by side; with --plots, a trade-off plot)",
    )
    add_rerank_options(s, skip=["diversity"])
    from lmrec.commands.models import add_ray_options

    add_ray_options(
        s,
        "rank the users on this Ray cluster ('local': start one on this machine), in chunks of "
        "--batch-size users over --ray-workers actors that each load the model once; the "
        "metrics are those of one process",
    )
    s.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    cmds["evaluate"] = cmd_evaluate
