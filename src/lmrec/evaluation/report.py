"""Reports of a protocol run: a terminal table, JSON and CSV files."""

from __future__ import annotations

__all__ = [
    "format_breakdown",
    "format_table",
    "to_json",
    "write_breakdown_csv",
    "write_csv",
    "write_json",
]

import csv
import json
import math
from pathlib import Path
from typing import Any

from lmrec.errors import LmrecError
from lmrec.evaluation.protocols import ProtocolResult


def _columns(result: ProtocolResult, metrics: list[str] | None) -> list[str]:
    first = next(iter(result.runs.values())).summary()
    keys = [k for k in first if k != "users" and not k.endswith("_std")]
    if metrics:
        wanted = set(metrics)
        keys = [k for k in keys if k.split("@")[0] in wanted or k in wanted]
    return keys


def _fmt(v: float | None, std: float | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    s = f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    if std is not None and not math.isnan(std):
        s += f"±{std:.4f}" if abs(v) < 100 else f"±{std:.1f}"
    return s


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]


def format_table(
    result: ProtocolResult,
    comparison: dict[str, dict[str, Any]] | None = None,
    metrics: list[str] | None = None,
) -> str:
    """One block per cut-off k: models as rows, metrics as columns (mean±std over folds for
    kfold); then the paired comparison with the baseline (p-value, bootstrap CIs)."""
    cols = _columns(result, metrics)
    sums = {lab: run.summary() for lab, run in result.runs.items()}
    counts = {s["users"] for s in sums.values()}
    if len(counts) == 1:
        n = next(iter(counts))
        who = f"{n} users" if result.folds == 1 else f"{n} (user, fold) evaluations"
    else:
        who = "users: " + ", ".join(f"{lab} {s['users']}" for lab, s in sums.items())
    folds = f", {result.folds} folds (mean±std)" if result.folds > 1 else ""
    ranking = result.sampled or "full (all items, history excluded)"
    lines = [f"protocol {result.protocol}{folds}; ranking: {ranking}; {who}"]
    groups: dict[str, list[str]] = {}
    for c in cols:
        base, _, k = c.partition("@")
        groups.setdefault(k, []).append(c)
    for k, keys in groups.items():
        head = [f"@{k}" if k else "", *[c.split("@")[0] for c in keys]]
        if k == next(iter(groups)):
            head.append("fit s")
        rows = [head]
        for lab, run in result.runs.items():
            s = sums[lab]
            row = [lab] + [
                _fmt(s.get(c), s.get(f"{c}_std") if result.folds > 1 else None) for c in keys
            ]
            if len(head) > len(keys) + 1:
                row.append(f"{sum(run.fit_seconds):.2f}")
            rows.append(row)
        lines.append("")
        lines.extend(_align(rows))
    if comparison:
        entries = list(comparison.items())
        metric = entries[0][1]["metric"]
        base = next((e.get("baseline") for _, e in entries if e.get("baseline")), entries[0][0])
        lines.append("")
        lines.append(f"per-user {metric}: mean [95% bootstrap CI]; paired test against {base}")
        w = max(len(lab) for lab, _ in entries)
        for lab, e in entries:
            line = f"  {lab.ljust(w)}  {e['mean']:.4f} [{e['ci'][0]:.4f}, {e['ci'][1]:.4f}]"
            if "p_value" in e:
                line += (
                    f"  diff {e['diff']:+.4f} [{e['diff_ci'][0]:+.4f}, {e['diff_ci'][1]:+.4f}]"
                    f"  {e['test']} p={e['p_value']:.3g}"
                )
            else:
                line += "  (baseline)"
            lines.append(line)
    return "\n".join(lines)


_BREAKDOWN_TITLES = {
    "popularity": "by item popularity: thirds of the catalogue by training interactions "
    "(items without any in the tail); a user counts in a bucket with their test items there",
    "history": "by user history length: training interactions per user, buckets merged "
    "up to 5% of the users",
}


def format_breakdown(rows: dict[str, list[dict[str, Any]]], k: int | None = None) -> str:
    """One table per breakdown (`ProtocolResult.breakdown`): rows (bucket, model) with the
    items and interaction range of a popularity bucket, the users, NDCG and Recall at k
    (default: the k of the ratio metric), the ratio and the p-value against the reference."""
    lines: list[str] = []
    for by, part in rows.items():
        if not part:
            continue
        metric = part[0]["ratio_metric"]
        kk = k if k is not None else metric.partition("@")[2]
        cols = list(dict.fromkeys([f"ndcg@{kk}", f"recall@{kk}", metric]))
        cols = [c for c in cols if c in part[0]]
        test = f"{part[0]['test']} p"
        pop = by == "popularity"
        head = ["bucket", *(["items", "interactions"] if pop else []), "model", "users"]
        table = [[*head, *cols, f"ratio {metric}", test]]
        for r in part:
            p = r["p_value"]
            table.append(
                [
                    str(r["bucket"]),
                    *([str(r["items"] or "-"), str(r["range"])] if pop else []),
                    str(r["model"]),
                    str(r["users"]),
                    *(_fmt(r[c]) for c in cols),
                    "-" if r["ratio"] is None else f"{r['ratio']:.3f}",
                    "-" if p is None else f"{p:.3g}",
                ]
            )
        if lines:
            lines.append("")
        ref = part[0]["reference"]
        ranking = part[0].get("ranking", "full")
        lines.append(
            f"{by} breakdown {_BREAKDOWN_TITLES.get(by, '')}; ranking: {ranking}; against {ref}"
        )
        lines.extend(_align(table))
    return "\n".join(lines)


def to_json(
    result: ProtocolResult,
    comparison: dict[str, dict[str, Any]] | None = None,
    per_user: bool = False,
    breakdown: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """The protocol result as JSON, with the comparison and the breakdown rows if given."""
    d = result.to_dict(per_user=per_user)
    if comparison is not None:
        d["comparison"] = comparison
    if breakdown:
        d["breakdown"] = breakdown
    return d


def write_json(
    result: ProtocolResult,
    path: str | Path,
    comparison: dict[str, dict[str, Any]] | None = None,
    per_user: bool = False,
    breakdown: dict[str, list[dict[str, Any]]] | None = None,
) -> Path:
    path = Path(path)
    report = to_json(result, comparison, per_user, breakdown)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    except OSError as exc:
        raise LmrecError(f"cannot write JSON report {path}: {exc.strerror}") from None
    return path


def write_csv(result: ProtocolResult, path: str | Path) -> Path:
    """One row per (model, fold) plus, for several folds, "mean" and "std" rows; one column
    per metric. Every row carries the protocol and the ranking label (full or sampled)."""
    path = Path(path)
    cols = _columns(result, None)
    header = ["protocol", "ranking", "model", "fold", *cols, "users", "fit_seconds"]
    rows: list[list[Any]] = []
    for lab, run in result.runs.items():
        for f, res in enumerate(run.test):
            s = res.summary()
            rows.append(
                [result.protocol, result.sampled or "full", lab, f + 1]
                + [s.get(c, "") for c in cols]
                + [s["users"], round(run.fit_seconds[f], 4)]
            )
        if result.folds > 1:
            s = run.summary()
            rows.append(
                [result.protocol, result.sampled or "full", lab, "mean"]
                + [s.get(c, "") for c in cols]
                + [s["users"], round(sum(run.fit_seconds) / len(run.fit_seconds), 4)]
            )
            rows.append(
                [result.protocol, result.sampled or "full", lab, "std"]
                + [s.get(f"{c}_std", "") for c in cols]
                + ["", ""]
            )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)
    except OSError as exc:
        raise LmrecError(f"cannot write CSV report {path}: {exc.strerror}") from None
    return path


def write_breakdown_csv(rows: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """The breakdown rows (`ProtocolResult.breakdown`) as CSV: one row per (breakdown,
    bucket, model), one column per metric, then the ratio and p-value against the reference."""
    path = Path(path)
    flat = [r for part in rows.values() for r in part]
    fixed = ["ranking", "by", "bucket", "range", "items", "model", "users"]
    tail = ["reference", "ratio_metric", "ratio", "test", "p_value"]
    metrics = list(dict.fromkeys(k for r in flat for k in r if k not in fixed + tail))
    header = fixed + metrics + tail
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows([["" if r.get(c) is None else r.get(c) for c in header] for r in flat])
    except OSError as exc:
        raise LmrecError(f"cannot write CSV report {path}: {exc.strerror}") from None
    return path
