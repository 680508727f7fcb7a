"""Serve a small synthetic store with real models on a loopback port, for `schemathesis run`
(benchmarks/service_fuzz.md): `python benchmarks/fuzz_server.py DIR PORT`; prints READY."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lmrec.service import Settings
from test_service import ADMIN, Server, fill_store, train


def main(tmp: Path, port: int) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{tmp / 'store.db'}"
    fill_store(url, n_users=12, n_items=28)
    models = tmp / "models"
    models.mkdir(exist_ok=True)
    train(url, "itemknn", models / "knn")
    train(url, "lmcontent", models / "lmc", encoder="tfidf:16")
    settings = Settings(
        db=url,
        models=[f"lmc={models / 'lmc'}", f"knn={models / 'knn'}"],
        models_dir=str(models),
        api_keys={ADMIN: "admin"},
        max_body_bytes=1 << 20,
    )
    srv = Server(settings, port=port)
    print("READY", srv.url, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
