"""`lmrec train`, `recommend`, `similar` and `tune`: fit, query and tune the registered models."""

from __future__ import annotations

__all__ = [
    "add_ray_options",
    "add_rerank_options",
    "fit_for_train",
    "parse_params",
    "ray_config",
    "register",
]

import argparse
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmrec.commands.rerank import add_rerank_options, rerank_config
from lmrec.errors import LmrecError

if TYPE_CHECKING:
    from lmrec.data import Dataset
    from lmrec.models.base import Ranker, Recommender


def _value(text: str) -> Any:
    """A parameter value from the command line: JSON if it parses (numbers, true, null)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_params(pairs: Sequence[str] | None, *, where: str = "--param") -> dict[str, Any]:
    """`k=v` strings -> {k: value}; values are JSON when they parse, else strings."""
    out: dict[str, Any] = {}
    for p in pairs or []:
        key, sep, val = p.partition("=")
        if not sep or not key.strip():
            raise LmrecError(f"{where} expects NAME=VALUE, got {p!r}")
        out[key.strip()] = _value(val.strip())
    return out


def _loo(ds):
    from lmrec.data.split import leave_one_out

    return leave_one_out(ds)


def _launch_processes(args: argparse.Namespace, model: Any) -> int:
    """Run this same `lmrec train` in `args.procs` processes under torchrun (PyTorch
    DistributedDataParallel, gloo on CPU): each process trains on its share of every batch
    with one CPU thread; the first one saves and reports."""
    import subprocess
    import sys

    if not model.trains_in_processes:
        raise LmrecError(
            f"--procs {args.procs}: only the sequence models (sasrec, dualsasrec, bert4rec, xlnet) "
            f"train in several processes; {args.model} trains in one"
        )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={args.procs}",
        "-m",
        "lmrec.cli",
        *args.argv,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rc = subprocess.call(cmd, env=env)
    if rc:
        raise LmrecError(f"training in {args.procs} processes failed (exit status {rc})")
    return 0


def fit_for_train(
    name: str, params: dict[str, Any], db: str, protocol: str | None
) -> tuple[Recommender, dict[str, Any]]:
    """What every process of `lmrec train` runs (one process, each torchrun process of
    `--procs N`, each Ray Train worker of `--ray`): build the model, read the store's
    snapshot, fit on it (or on its leave-one-out train split, stopping early on the valid
    part); returns the model and {"fit_seconds", and what the model chose while fitting}."""
    from lmrec.data import snapshot

    return _fit_snapshot(name, params, snapshot(db), protocol)


def _fit_snapshot(
    name: str, params: dict[str, Any], ds: Dataset, protocol: str | None
) -> tuple[Recommender, dict[str, Any]]:
    from lmrec.models import create_model

    model = create_model(name, **params)
    if protocol == "loo":
        from lmrec.evaluation.protocols import fit_on

        # Models that stop early (the sequence models) watch the split's validation part.
        fit_s = fit_on(model, _loo(ds))
    else:
        t0 = time.perf_counter()
        model.fit(ds)
        fit_s = time.perf_counter() - t0
    info: dict[str, Any] = {"fit_seconds": round(fit_s, 3)}
    if chosen := model.chosen():
        info["chosen"] = chosen
    privacy = getattr(model, "privacy_", None)  # a DP model's spent budget (lmrec.privacy)
    if privacy:
        info["privacy"] = privacy
    return model, info


def ray_config(args: argparse.Namespace) -> Any:
    """The `lmrec.cluster.RayConfig` of --ray, --ray-workers and --ray-gpu."""
    from lmrec.cluster import RayConfig

    gpu = {"auto": None, "yes": True, "no": False}[args.ray_gpu]
    try:
        return RayConfig(address=args.ray, workers=args.ray_workers, use_gpu=gpu)
    except ValueError as e:
        raise LmrecError(f"--ray / --ray-workers: {e}") from None


def _train_on_ray(args: argparse.Namespace, model: Any) -> int:
    """`lmrec train --ray`: the same fitting in Ray Train workers (`lmrec.cluster`); the
    first worker's saved model is copied to --out, and this process reports as `cmd_train`."""
    import functools

    from lmrec.cluster import train_on_ray
    from lmrec.models.base import Recommender

    if not model.trains_in_processes:
        raise LmrecError(
            f"--ray: only the sequence models (sasrec, dualsasrec, bert4rec, xlnet) train on "
            f"Ray; {args.model} trains in one process"
        )
    if args.procs > 1:
        raise LmrecError("give --procs N or --ray ADDRESS, not both (--ray-workers sets N)")
    config = ray_config(args)
    # The workers run elsewhere (another directory, another host): a relative SQLite path
    # is made absolute; a server URL is reached as it is.
    db = args.db
    if db.startswith("sqlite:///") and not db.startswith("sqlite:////") and ":memory:" not in db:
        db = "sqlite:///" + str(Path(db[len("sqlite:///") :]).resolve())
    fit = functools.partial(fit_for_train, args.model, parse_params(args.param), db, args.protocol)
    info = train_on_ray(fit, args.out, config)
    where = f"Ray {config.address}, {config.workers} workers"
    return _report(args, Recommender.load(args.out), info, where=where)


def cmd_train(args: argparse.Namespace) -> int:
    from lmrec.models import create_model

    model = create_model(args.model, **parse_params(args.param))
    if args.procs < 1:
        raise LmrecError(f"--procs must be at least 1, got {args.procs}")
    if args.ray is not None:
        return _train_on_ray(args, model)
    if args.procs > 1 and "LOCAL_RANK" not in os.environ:
        return _launch_processes(args, model)
    distributed = "LOCAL_RANK" in os.environ  # a process of a torchrun launch
    from lmrec.data import snapshot

    ds = snapshot(args.db)
    model, info = _fit_snapshot(args.model, parse_params(args.param), ds, args.protocol)
    if distributed:
        from lmrec.nn import is_main_process

        if not is_main_process():
            return 0  # under torchrun the first process saves and reports
    model.save(args.out)
    return _report(args, model, info, ds)


def _report(
    args: argparse.Namespace,
    model: Any,
    info: dict[str, Any],
    ds: Dataset | None = None,
    where: str | None = None,
) -> int:
    """Print what `lmrec train` did: the fit, the saved model, and with --protocol loo the
    model's valid and test NDCG@10 / Recall@10 on the split of the store's snapshot `ds`
    (read here when not given)."""
    from lmrec.data import snapshot
    from lmrec.evaluation import leave_one_out_metrics

    ds = ds if ds is not None else snapshot(args.db)
    split = _loo(ds) if args.protocol == "loo" else None
    data = split.train if split is not None else ds
    fit_s = info["fit_seconds"]
    out: dict[str, Any] = {
        "model": args.model,
        "params": model.config.model_dump(mode="json"),
        "fit_seconds": fit_s,
        "trained_on": "loo train split" if args.protocol == "loo" else "store snapshot",
        "interactions": data.n_interactions,
        "out": str(args.out),
    }
    if where:
        out["trained_in"] = where
    chosen, privacy = info.get("chosen"), info.get("privacy")
    if chosen:
        out["chosen"] = chosen
    if privacy:
        out["privacy"] = privacy
    if split is not None:
        out["valid"] = leave_one_out_metrics(model, split, "valid")
        out["test"] = leave_one_out_metrics(model, split, "test")
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"trained {args.model} on {out['interactions']} interactions ({out['trained_on']}) "
        f"in {fit_s:.2f} s{f' ({where})' if where else ''}; saved to {args.out}"
    )
    if chosen:
        print(f"  chosen while fitting: {json.dumps(chosen)}")
    if privacy:
        print(
            f"  differential privacy: ({privacy['epsilon']:.3f}, {privacy['delta']:g})-DP "
            f"by the RDP accountant; noise sigma {privacy['sigma']:.3f}, sensitivity "
            f"{privacy['sensitivity']:.3f} ({privacy['mechanism']})"
        )
        if "steps" in privacy:  # DP-SGD: what the accountant composed
            print(
                f"  per {privacy['unit']}: noise multiplier "
                f"{privacy['noise_multiplier']:.3f}, sample rate "
                f"{privacy['sample_rate']:.4f}, {privacy['steps']} steps"
            )
        if privacy.get("note"):
            print(f"  not covered: {privacy['note']}")
    for part in ("valid", "test"):
        if part in out:
            m = out[part]
            print(f"  {part:5s} NDCG@10 {m['ndcg@10']:.4f}  Recall@10 {m['recall@10']:.4f}")
    return 0


def _titles(model: Any, ids: list[str], extra: dict[str, str] | None = None) -> list[str]:
    """Titles from the model's training data, else from `extra` (items added later)."""
    extra = extra or {}
    ds = model.history
    if ds is None:
        return [extra.get(i, "") for i in ids]
    idx = ds.items.indices(ids)
    pairs = zip(ids, idx, strict=True)
    return [ds.item_features.title[j] if j >= 0 else extra.get(i, "") for i, j in pairs]


def _print_recs(
    model: Any,
    recs: Any,
    as_json: bool,
    head: str,
    explanations: list | None = None,
    titles: dict[str, str] | None = None,
) -> None:
    titles = _titles(model, recs.items, titles)
    if as_json:
        rows = [
            {"item": i, "score": s, "title": t}
            for i, s, t in zip(recs.items, recs.scores, titles, strict=True)
        ]
        for row, e in zip(rows, explanations or [], strict=False):
            row["explanation"] = {
                "sentence": e.sentence,
                "method": e.method,
                "reasons": e.to_dict()["reasons"],
            }
        print(json.dumps({"items": rows, "fallback": recs.fallback}, indent=2))
        return
    print(head + (f" (fallback: {recs.fallback})" if recs.fallback else ""))
    for r, (i, s, t) in enumerate(zip(recs.items, recs.scores, titles, strict=True), 1):
        print(f"{r:3d}. {i:>8s}  {s:9.4f}  {t}")
        if explanations:
            print(f"{'':15s}{explanations[r - 1].sentence}")


def _load(path: str):
    from lmrec.models.base import Recommender

    if not Path(path).exists():
        raise LmrecError(f"no saved model at {path}")
    return Recommender.load(path)


def cmd_recommend(args: argparse.Namespace) -> int:
    from lmrec.models.base import Query

    if args.user is None and not args.items:
        raise LmrecError("give --user ID and/or --items A,B,...")
    model = _load(args.model)
    added: dict[str, str] = {}
    if args.new_items:
        model, added = _with_store_items(model, args.db)
    items = [x.strip() for x in (args.items or "").split(",") if x.strip()]
    unknown = [i for i in items if i not in model.items]
    if unknown:
        raise LmrecError(f"unknown item ids in --items: {', '.join(unknown)}")
    query = Query(user=args.user, items=items)
    ranker = _reranked(model, args)
    recs = ranker.recommend(query, n=args.n)
    who = f"user {args.user}" if args.user is not None else "the given items"
    how = f"{model.name}" if ranker is model else f"{model.name}, {ranker.reranker!r}"
    explanations = None
    if args.explain:
        from lmrec.explain import explain

        explanations = explain(model, query, recs.items) if recs.items else []
    _print_recs(model, recs, args.json, f"top {args.n} for {who} ({how})", explanations, added)
    return 0


def _with_store_items(model: Recommender, db: str) -> tuple[Recommender, dict[str, str]]:
    """The model with the store's items that it does not know, added from their text, and
    the titles of those items."""
    from lmrec.service.live import with_records
    from lmrec.store import Store

    with Store(db, create=False) as store:
        assert model.items is not None
        new = [r for r in store.read_table("item") if r["ext_id"] not in model.items]
    if not new:
        return model, {}
    if not model.accepts_new_items:
        raise LmrecError(
            f"--new-items: the store holds {len(new)} items the {model.name!r} model was not "
            "trained on, and it cannot score items from their text; retrain it"
        )
    print(
        f"added {len(new)} new item(s) from the store by their text: "
        + ", ".join(f"{r['ext_id']} ({r.get('title') or ''})" for r in new[:5]),
        file=sys.stderr,
    )
    return with_records(model, new), {r["ext_id"]: r.get("title") or "" for r in new}


def _reranked(model: Recommender, args: argparse.Namespace) -> Ranker:
    """The model, or the model behind diversity re-ranking and filters (`lmrec.rerank`)."""
    from lmrec.rerank import diversify

    config = rerank_config(args)
    return diversify(model, config) if config.active else model


def cmd_similar(args: argparse.Namespace) -> int:
    model = _load(args.model)
    recs = model.similar_items(args.item, n=args.n)
    _print_recs(model, recs, args.json, f"items similar to {args.item} ({model.name})")
    return 0


def _grid(specs: Sequence[str] | None) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for spec in specs or []:
        key, sep, vals = spec.partition("=")
        values = [_value(v.strip()) for v in vals.split(",") if v.strip()]
        if not sep or not key.strip() or not values:
            raise LmrecError(f"--grid expects NAME=V1,V2,..., got {spec!r}")
        out[key.strip()] = values
    return out


def cmd_tune(args: argparse.Namespace) -> int:
    from lmrec.data import snapshot
    from lmrec.evaluation import leave_one_out_metrics
    from lmrec.models import create_model

    grid = _grid(args.grid)
    fixed = parse_params(args.param)
    keys = list(grid)
    combos = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*grid.values())]
    if args.trials and args.trials < len(combos):
        combos = random.Random(args.seed).sample(combos, args.trials)
    for c in combos:  # validate every combination before spending time on any
        create_model(args.model, **fixed, **c)
    split = _loo(snapshot(args.db))
    rows = []
    for c in combos:
        model = create_model(args.model, **fixed, **c)
        t0 = time.perf_counter()
        model.fit(split.train)
        fit_s = time.perf_counter() - t0
        m = leave_one_out_metrics(model, split, "valid")
        rows.append({"params": c, **m, "fit_seconds": round(fit_s, 3)})
        if not args.json:
            print(
                f"  {json.dumps(c):60s} NDCG@10 {m['ndcg@10']:.4f}  "
                f"Recall@10 {m['recall@10']:.4f}  fit {fit_s:.2f} s",
                flush=True,
            )
    best = max(rows, key=lambda r: r["ndcg@10"])
    best_model = create_model(args.model, **fixed, **best["params"]).fit(split.train)
    best["test"] = leave_one_out_metrics(best_model, split, "test")
    result = {"model": args.model, "metric": "valid ndcg@10", "trials": rows, "best": best}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        t = best["test"]
        print(
            f"best {args.model} {json.dumps({**fixed, **best['params']})}: valid NDCG@10 "
            f"{best['ndcg@10']:.4f}; test NDCG@10 {t['ndcg@10']:.4f} Recall@10 {t['recall@10']:.4f}"
        )
    return 0


def add_ray_options(s: argparse.ArgumentParser, what: str) -> None:
    """--ray ADDRESS|local, --ray-workers N and --ray-gpu (`lmrec.cluster.RayConfig`)."""
    s.add_argument("--ray", metavar="ADDRESS|local", help=what + " (pip install 'lmrec[ray]')")
    s.add_argument("--ray-workers", type=int, default=2, help="Ray workers (default 2)")
    s.add_argument(
        "--ray-gpu",
        choices=["auto", "yes", "no"],
        default="auto",
        help="one GPU per Ray worker (auto: when the cluster has enough GPUs)",
    )


def register(
    sub: argparse._SubParsersAction, cmds: dict[str, Callable[[argparse.Namespace], int]]
) -> None:
    """Add train, recommend, similar and tune to the `lmrec` parser."""
    from lmrec.models import model_names

    names = ", ".join(model_names())
    s = sub.add_parser("train", help="fit a model on the stored data and save it")
    s.add_argument("--model", required=True, help=f"model name ({names})")
    s.add_argument("--param", action="append", metavar="NAME=VALUE", help="a hyperparameter")
    s.add_argument("--out", required=True, help="directory to save the model into")
    s.add_argument(
        "--protocol",
        choices=["loo"],
        help="fit on the leave-one-out train split and report valid/test NDCG@10, Recall@10",
    )
    s.add_argument(
        "--procs",
        type=int,
        default=1,
        help="sequence models: train in this many processes (DDP under torchrun, one CPU "
        "thread each; on 2 cores 1.1x faster than 2 threads, benchmarks/sequential.md)",
    )
    add_ray_options(
        s,
        "sequence models: train with Ray Train (TorchTrainer, DDP) on this Ray "
        "cluster ('local': start one on this machine)",
    )
    s.add_argument("--json", action="store_true", help="print JSON")
    cmds["train"] = cmd_train

    s = sub.add_parser("recommend", help="top-n items for a user and/or recent items")
    s.add_argument("--model", required=True, help="directory of a saved model")
    s.add_argument("--user", help="user id")
    s.add_argument("--items", help="comma-separated recent item ids, oldest first")
    s.add_argument("-n", type=int, default=10, help="how many items (default 10)")
    s.add_argument("--json", action="store_true", help="print JSON")
    add_rerank_options(s)
    s.add_argument(
        "--explain", action="store_true", help="say why each item is recommended (true reasons)"
    )
    s.add_argument(
        "--new-items",
        action="store_true",
        help="first add the items of the store (--db) that the model was not trained on, "
        "placed by their text, as the service does (models that accept new items: hybrid, "
        "sasrec text=fuse, lmcontent, lmmf, coldstart_item, ...)",
    )
    cmds["recommend"] = cmd_recommend

    s = sub.add_parser("similar", help="items most similar to an item")
    s.add_argument("--model", required=True, help="directory of a saved model")
    s.add_argument("--item", required=True, help="item id")
    s.add_argument("-n", type=int, default=10, help="how many items (default 10)")
    s.add_argument("--json", action="store_true", help="print JSON")
    cmds["similar"] = cmd_similar

    s = sub.add_parser("tune", help="grid or random search on the leave-one-out validation split")
    s.add_argument("--model", required=True, help=f"model name ({names})")
    s.add_argument(
        "--grid", action="append", metavar="NAME=V1,V2", help="values to try for a parameter"
    )
    s.add_argument("--param", action="append", metavar="NAME=VALUE", help="a fixed parameter")
    s.add_argument("--trials", type=int, help="sample this many combinations at random")
    s.add_argument("--seed", type=int, default=0, help="seed of the random sample")
    s.add_argument("--json", action="store_true", help="print JSON")
    cmds["tune"] = cmd_tune
