"""The report of an experiment: the store's exposures, the feedback attributed to them, per-arm
estimates with intervals, the sequential test of each arm against the control, the
sample-ratio check and the stop rule's decision. The CLI and the service both call `report`.

Attribution (last touch): a feedback event of a user on an item counts for the latest exposure
of that user that showed the item no more than `window_seconds` before the event; an exposure
is a click when at least one `success_events` event counts for it (the CTR is clicked exposures
over exposures), a conversion when a `conversion_events` one does.
"""

from __future__ import annotations

__all__ = ["Outcome", "attribute", "report"]

import json
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmrec.experiments.config import ExperimentConfig
from lmrec.experiments.stats import msprt, srm_check, wilson
from lmrec.store import Store

#: Looks of the sequential test shown in the report (the test itself is valid at any look).
LOOKS = 100


@dataclass
class Outcome:
    """One exposure and what followed it."""

    arm: str
    unit: str
    items: list[str]
    ts: float
    first_success: float = math.inf  # time of the first attributed success event
    converted: bool = False
    revenue: float = 0.0
    clicked: set[int] = field(default_factory=set)  # ranks of items with a success event
    events: int = 0  # attributed events of any kind


def attribute(
    config: ExperimentConfig,
    rows: Sequence[tuple[str, str, str, float, str]],
    events: Sequence[tuple[str, str, str, float | None, float]],
    prices: Mapping[str, float] | None = None,
) -> list[Outcome]:
    """Exposures (`Store.read_exposures` rows) with the events (`Store.events_of`) attributed."""
    out = [Outcome(arm, unit, json.loads(items), ts) for arm, unit, items, ts, _ in rows]
    by_unit: dict[str, list[int]] = defaultdict(list)
    for k, o in enumerate(out):
        by_unit[o.unit].append(k)  # in time order
    success, conversion = set(config.success_events), set(config.conversion_events)
    window = config.window_seconds
    for user, item, ev, _value, ts in events:
        for k in reversed(by_unit.get(user, ())):
            o = out[k]
            if o.ts > ts:
                continue
            if ts - o.ts > window:
                break
            if item in o.items:
                o.events += 1
                if ev in success:
                    o.first_success = min(o.first_success, ts)
                    o.clicked.add(o.items.index(item))
                if ev in conversion:
                    o.converted = True
                    price = (prices or {}).get(item)
                    if price is not None:
                        o.revenue += float(price)
                break
    return out


def _ndcg(o: Outcome) -> float:
    if not o.clicked:
        return 0.0
    dcg = sum(1 / math.log2(r + 2) for r in o.clicked)
    ideal = sum(1 / math.log2(r + 2) for r in range(len(o.clicked)))
    return dcg / ideal


def _arm_stats(config: ExperimentConfig, arm: str, outs: list[Outcome]) -> dict[str, Any]:
    n = len(outs)
    clicks = sum(o.first_success < math.inf for o in outs)
    conv = sum(o.converted for o in outs)
    lo, hi = wilson(clicks, n, 0.05)
    clo, chi = wilson(conv, n, 0.05)
    return {
        "arm": arm,
        "model": next(a.model for a in config.arms if a.name == arm),
        "share": next(a.share for a in config.arms if a.name == arm),
        "units": len({o.unit for o in outs}),
        "exposures": n,
        "clicks": clicks,
        "ctr": clicks / n if n else 0.0,
        "ctr_ci": [lo, hi],
        "conversions": conv,
        "conversion_rate": conv / n if n else 0.0,
        "conversion_ci": [clo, chi],
        "revenue": float(sum(o.revenue for o in outs)),
        "ndcg_clicked": float(np.mean([_ndcg(o) for o in outs])) if n else 0.0,
        "attributed_events": sum(o.events for o in outs),
    }


def _sequential(
    config: ExperimentConfig, outs: list[Outcome], now: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each arm against the control (Bonferroni over the arms), with the series to chart."""
    control = config.arms[0].name
    times = np.array(sorted(o.ts for o in outs)) if outs else np.zeros(0)
    if len(times):
        picks = np.unique(np.linspace(0, len(times) - 1, min(LOOKS, len(times))).astype(int))
        looks = np.append(times[picks][1:], now)
    else:
        looks = np.zeros(0)
    cum: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for arm in config.arms:
        ts = np.sort([o.ts for o in outs if o.arm == arm.name])
        ss = np.sort([o.first_success for o in outs if o.arm == arm.name])
        cum[arm.name] = (
            np.searchsorted(ts, looks, side="right"),
            np.searchsorted(ss, looks, side="right"),
        )
    alpha = config.alpha / max(1, len(config.arms) - 1)
    tests = []
    for arm in config.arms[1:]:
        (na, sa), (nb, sb) = cum[control], cum[arm.name]
        r = msprt(na, sa, nb, sb, alpha=alpha, tau=config.tau)
        tests.append(
            {
                "arm": arm.name,
                "control": control,
                "difference": r.difference,
                "ci": [r.ci_low, r.ci_high],
                "p_value": r.p_value,
                "alpha": alpha,
                "significant": r.significant,
                "p_values": r.p_values,
            }
        )
    series = {
        "t": looks.tolist(),
        "exposures": {a: c[0].tolist() for a, c in cum.items()},
        "ctr": {a: (c[1] / np.maximum(c[0], 1)).tolist() for a, c in cum.items()},
    }
    return tests, series


def _decision(
    config: ExperimentConfig, arms: list[dict], tests: list[dict], srm: dict, ended: bool
) -> dict[str, Any]:
    """The stop rule: a sample-ratio mismatch voids the results; else stop once an arm differs
    from the control by the sequential test with every arm past `min_exposures`."""
    if srm["mismatch"]:
        return {
            "action": "investigate",
            "winner": None,
            "reason": "sample-ratio mismatch: the split does not follow the shares "
            f"(chi-square p = {srm['p_value']:.2g}); the results are not trustworthy",
        }
    small = [a["arm"] for a in arms if a["exposures"] < config.min_exposures]
    sig = [t for t in tests if t["significant"]]
    if sig and not small:
        best = max(sig, key=lambda t: abs(t["difference"]))
        winner = best["arm"] if best["difference"] > 0 else best["control"]
        return {
            "action": "stop",
            "winner": winner,
            "reason": f"{best['arm']} vs {best['control']}: CTR difference "
            f"{best['difference']:+.4f}, always-valid p = {best['p_value']:.2g} < {best['alpha']:g}",
        }
    if ended:
        return {
            "action": "ended",
            "winner": None,
            "reason": "ended without a significant difference",
        }
    why = (
        f"arms below {config.min_exposures} exposures: {', '.join(small)}"
        if small
        else ("no arm differs from the control yet")
    )
    return {"action": "continue", "winner": None, "reason": why}


def report(
    store: Store,
    config: ExperimentConfig,
    *,
    stopped_at: float | None = None,
    prices: Mapping[str, float] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Everything the analyst needs about one experiment (the service's report body)."""
    now = time.time() if now is None else now
    rows = store.read_exposures(config.name)
    start = config.start if config.start is not None else (rows[0][3] if rows else now)
    end = stopped_at if stopped_at is not None else config.stop
    until = None if end is None else end + config.window_seconds
    events = store.events_of([r[1] for r in rows], start, until) if rows else []
    outs = attribute(config, rows, events, prices)
    by_arm: dict[str, list[Outcome]] = {a.name: [] for a in config.arms}
    for o in outs:
        by_arm.setdefault(o.arm, []).append(o)
    arms = [_arm_stats(config, a.name, by_arm[a.name]) for a in config.arms]
    chi2, p = srm_check([a["units"] for a in arms], [a.share for a in config.arms])
    srm = {"chi2": chi2, "p_value": p, "mismatch": p < config.srm_alpha, "alpha": config.srm_alpha}
    tests, series = _sequential(config, outs, now)
    ended = stopped_at is not None or (config.stop is not None and now >= config.stop)
    return {
        "name": config.name,
        "state": "stopped" if ended else "running",
        "config": config.model_dump(),
        "stopped_at": stopped_at,
        "exposures": len(outs),
        "other_arms": {
            k: len(v) for k, v in by_arm.items() if k not in {a.name for a in config.arms}
        },
        "arms": arms,
        "tests": tests,
        "srm": srm,
        "decision": _decision(config, arms, tests, srm, ended),
        "series": series,
    }
