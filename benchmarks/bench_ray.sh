#!/usr/bin/env bash
# SASRec on ML-100K: `lmrec train --procs 2` vs `--ray local` (2 workers), then the saved
# --procs 2 model evaluated in one process vs on Ray (2 actors). Writes artifacts/ray-*.json.
# Usage: nice -n 19 benchmarks/bench_ray.sh [EPOCHS]   (benchmarks/ray.md)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EPOCHS=${1:-40}
DB=sqlite:///artifacts/ray-ml100k.db
A=artifacts
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
lmrec() { "$PY" -m lmrec.cli --db "$DB" "$@"; }
[ -f artifacts/ray-ml100k.db ] || lmrec sample ml-100k
P=(--model sasrec --protocol loo --param "epochs=$EPOCHS" --param patience=5 --param progress=false --json)
date -u +"procs 2 start %FT%TZ"
/usr/bin/time -f "%e s wall" "$PY" -m lmrec.cli --db "$DB" train "${P[@]}" --procs 2 --out $A/ray-sasrec-procs2 > $A/ray-train-procs2.json
date -u +"ray start %FT%TZ"
/usr/bin/time -f "%e s wall" "$PY" -m lmrec.cli --db "$DB" train "${P[@]}" --ray local --ray-workers 2 --out $A/ray-sasrec-ray > $A/ray-train-ray.json 2> $A/ray-train-ray.log
E=(evaluate --model-dir $A/ray-sasrec-procs2 --protocol loo --k 5,10,20 --batch-size 128 -q)
date -u +"eval start %FT%TZ"
/usr/bin/time -f "%e s wall" "$PY" -m lmrec.cli --db "$DB" "${E[@]}" --json $A/ray-eval-single.json > /dev/null
/usr/bin/time -f "%e s wall" "$PY" -m lmrec.cli --db "$DB" "${E[@]}" --json $A/ray-eval-ray.json --ray local --ray-workers 2 > /dev/null 2> $A/ray-eval-ray.log
"$PY" - <<'PY'
import json

def load(p):
    return json.load(open(p))

def strip(x):  # everything but the timings
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if "seconds" not in k}
    return [strip(v) for v in x] if isinstance(x, list) else x

for name in ("procs2", "ray"):
    r = load(f"artifacts/ray-train-{name}.json")
    print(name, "valid", r["valid"], "test", r["test"], "fit_s", r["fit_seconds"], r.get("chosen"))
s, r = load("artifacts/ray-eval-single.json"), load("artifacts/ray-eval-ray.json")
print("evaluation reports identical (timings aside):", strip(s) == strip(r))
print(json.dumps(strip(s))[:3000])
PY
