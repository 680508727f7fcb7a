"""Writing artifact directories (saved models, dataset snapshots, checkpoints) safely."""

from __future__ import annotations

__all__ = ["staged_dir"]

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmrec.errors import LmrecError


@contextmanager
def staged_dir(path: str | Path, marker: str) -> Iterator[Path]:
    """Write a directory so that it appears complete or not at all.

    Yields an empty staging directory beside `path`. When the block ends without an error the
    staging directory takes the place of `path` (a previous artifact there is moved aside and
    deleted); on an error it is deleted and `path` is left as it was. A crash leaves at most a
    hidden `.NAME.tmp-*` or `.NAME.old-*` directory beside `path`, never a half-written `path`.

    `marker` is the file that identifies an artifact of this kind (e.g. config.json): an
    existing non-empty directory without it is refused rather than replaced, so that saving
    into the wrong folder cannot delete someone's files.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise LmrecError(f"{path} exists and is not a directory")
        if any(path.iterdir()) and not (path / marker).exists():
            raise LmrecError(
                f"{path} is a non-empty directory that is not an lmrec artifact (no {marker}); "
                "choose a new or empty directory"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = path.with_name(f".{path.name}.tmp-{tag}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{tag}")
        path.rename(old)
    tmp.rename(path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
