"""`lmrec experiment create/list/report/stop`: A/B experiments in the store.

The same `ExperimentConfig` and the same `report` as the service's /experiments endpoints; a
running service picks up an experiment created or stopped here within a second.
"""

from __future__ import annotations

__all__ = ["register"]

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from lmrec.errors import LmrecError


def _find(store: Any, name: str) -> tuple[Any, float | None]:
    from lmrec.experiments import ExperimentConfig

    for r in store.read_experiments():
        if r["name"] == name:
            return ExperimentConfig.model_validate_json(r["config"]), r["stopped_at"]
    raise LmrecError(f"unknown experiment {name!r}")


def cmd_experiment(args: argparse.Namespace) -> int:
    from lmrec.experiments import ExperimentConfig
    from lmrec.experiments.report import report
    from lmrec.store import Store

    with Store(args.db) as store:
        if args.action == "create":
            cfg = ExperimentConfig.parse(args.config).started()
            store.put_experiment(cfg.name, cfg.dumps(), time.time())
            print(
                f"experiment {cfg.name!r} created: "
                + ", ".join(f"{a.name}={a.model or 'active'} ({a.share:.0%})" for a in cfg.arms)
            )
        elif args.action == "list":
            for r in store.read_experiments():
                cfg = ExperimentConfig.model_validate_json(r["config"])
                state = "stopped" if r["stopped_at"] is not None else "running"
                arms = " / ".join(f"{a.name}:{a.model or 'active'}:{a.share:g}" for a in cfg.arms)
                print(f"{cfg.name}\t{state}\t{arms}")
        elif args.action == "stop":
            _find(store, args.name)
            if not store.stop_experiment(args.name, time.time()):
                raise LmrecError(f"experiment {args.name!r} is stopped already")
            print(f"experiment {args.name!r} stopped")
        else:
            cfg, stopped = _find(store, args.name)
            rep = report(store, cfg, stopped_at=stopped)
            print(json.dumps(rep, indent=2) if args.json else _text(rep))
    return 0


def _text(rep: dict[str, Any]) -> str:
    lines = [f"experiment {rep['name']} ({rep['state']}): {rep['exposures']} exposures"]
    lines.append(f"{'arm':<12}{'model':<14}{'units':>7}{'exposures':>10}{'CTR':>8}  95% CI")
    for a in rep["arms"]:
        lo, hi = a["ctr_ci"]
        lines.append(
            f"{a['arm']:<12}{a['model'] or 'active':<14}{a['units']:>7}{a['exposures']:>10}"
            f"{a['ctr']:>8.4f}  [{lo:.4f}, {hi:.4f}]"
        )
    for t in rep["tests"]:
        lo, hi = t["ci"]
        lines.append(
            f"mSPRT {t['arm']} vs {t['control']}: difference {t['difference']:+.4f} "
            f"(always-valid CI [{lo:+.4f}, {hi:+.4f}]), p = {t['p_value']:.3g}"
        )
    s = rep["srm"]
    lines.append(
        f"sample-ratio check: chi2 = {s['chi2']:.2f}, p = {s['p_value']:.3g}"
        + (" -> MISMATCH" if s["mismatch"] else " (ok)")
    )
    d = rep["decision"]
    lines.append(
        f"decision: {d['action']}"
        + (f", winner {d['winner']}" if d["winner"] else "")
        + f": {d['reason']}"
    )
    return "\n".join(lines)


def register(
    sub: argparse._SubParsersAction, cmds: dict[str, Callable[[argparse.Namespace], int]]
) -> None:
    """Add `experiment` to the `lmrec` parser."""
    s = sub.add_parser("experiment", help="A/B experiments: create, list, report, stop")
    acts = s.add_subparsers(dest="action", required=True)
    c = acts.add_parser("create", help="create an experiment from a JSON ExperimentConfig")
    c.add_argument("config", help="JSON file (or JSON text) of an ExperimentConfig")
    acts.add_parser("list", help="every experiment and its state")
    r = acts.add_parser("report", help="per-arm CTR with intervals, sequential test, SRM check")
    r.add_argument("name")
    r.add_argument("--json", action="store_true", help="the whole report as JSON")
    t = acts.add_parser("stop", help="stop assigning users to an experiment")
    t.add_argument("name")
    cmds["experiment"] = cmd_experiment
