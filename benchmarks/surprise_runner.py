"""Surprise's side of `bench_ratings.py`, run with the benchmark's own Python environment
(scikit-surprise is not an lmrec dependency):

    /work/venv-surprise/bin/python benchmarks/surprise_runner.py FOLDS.csv OUT.json

FOLDS.csv has columns user,item,rating,fold; each fold is the test part once and the other
folds are its training part (the same folds lmrec is measured on). Writes, per algorithm, the
RMSE, MAE and fit seconds of every fold.
"""

from __future__ import annotations

import csv
import json
import sys
import time

import numpy as np
from surprise import SVD, BaselineOnly, Dataset, KNNBaseline, Reader, SVDpp, accuracy


def main(path: str, out: str) -> None:
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    folds = sorted({int(r["fold"]) for r in rows})
    algos = {
        "BaselineOnly": lambda: BaselineOnly(verbose=False),
        "SVD": lambda: SVD(random_state=0),
        "SVD++": lambda: SVDpp(random_state=0),
        "KNNBaseline": lambda: KNNBaseline(verbose=False),
        "KNNBaseline (item, pearson_baseline)": lambda: KNNBaseline(
            sim_options={"name": "pearson_baseline", "user_based": False}, verbose=False
        ),
    }
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame["rating"] = frame["rating"].astype(float)
    frame["fold"] = frame["fold"].astype(int)
    reader = Reader(rating_scale=(1, 5))
    results: dict[str, dict[str, list[float]]] = {}
    for name, make in algos.items():
        res = results.setdefault(name, {"rmse": [], "mae": [], "fit_seconds": []})
        for f in folds:
            train = frame[frame.fold != f][["user", "item", "rating"]]
            test = frame[frame.fold == f][["user", "item", "rating"]]
            trainset = Dataset.load_from_df(train, reader).build_full_trainset()
            algo = make()
            t0 = time.perf_counter()
            algo.fit(trainset)
            res["fit_seconds"].append(time.perf_counter() - t0)
            pred = algo.test(list(test.itertuples(index=False, name=None)))
            res["rmse"].append(accuracy.rmse(pred, verbose=False))
            res["mae"].append(accuracy.mae(pred, verbose=False))
            print(name, f, res["rmse"][-1], res["mae"][-1], res["fit_seconds"][-1], flush=True)
    for res in results.values():
        for k in ("rmse", "mae", "fit_seconds"):
            res[f"{k}_mean"] = float(np.mean(res[k]))
            res[f"{k}_std"] = float(np.std(res[k], ddof=1))
    with open(out, "w") as fh:
        json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
