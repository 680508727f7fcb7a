"""Erasure of a user (GDPR art. 17): from the store, the text-vector cache, the saved models,
the store's free pages and write-ahead log, with a log of what was removed.

`erase_user(store, user, model_dirs)`:

1. the hashes of the user's profile texts (as `lmrec.text.user_text` writes them, the text
   cache's keys) are computed from their stored attributes and tags;
2. `Store.erase_user` deletes their row, their events and those cached vectors in one
   transaction and appends counts (never the id or the data) to the erasure log;
3. every saved model under `model_dirs` that knows the user is rewritten without them
   (`Recommender.forget_users`: tombstoned id, history, attributes, tags and user-indexed
   state gone), through `staged_dir`, so no old copy of the artifact stays behind;
4. `Store.compact` leaves no copy in free pages or the WAL (SQLite: secure_delete, WAL
   truncate, VACUUM; PostgreSQL: VACUUM FULL, CHECKPOINT).

What it does not reach: backups, replicas, PostgreSQL's WAL segments, log files of other
programs, and item-side parameters that their events shaped (retrain to remove those).
"""

from __future__ import annotations

__all__ = ["ErasureReport", "erase_user", "forget_in_artifacts", "profile_hashes"]

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmrec.store import Store

log = logging.getLogger("lmrec.erasure")


@dataclass
class ErasureReport:
    """What one erasure removed (counts and model folder names; no personal data)."""

    found: bool
    store: dict[str, int] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"found": self.found, "store": self.store, "models": self.models}


def profile_hashes(attributes: dict[str, Any] | None, tags: Iterable[str] | None) -> list[str]:
    """Text-cache keys of a user's profile texts: the default text, and attributes and tags
    alone (the variants `lmrec.text.user_text` makes when a model uses some fields)."""
    from lmrec.text.cache import text_hash
    from lmrec.text.templates import user_text

    attrs, tag_list = dict(attributes or {}), list(tags or ())
    texts = {
        user_text(attrs, tag_list),
        user_text(attrs, ()),
        user_text({}, tag_list),
        user_text(attrs, tag_list, max_chars=None),
    }
    return [text_hash(t) for t in texts if t]


def _artifacts(dirs: Iterable[str | Path]) -> list[Path]:
    """Saved models (folders with config.json) in or directly under each of `dirs`."""
    out: list[Path] = []
    for d in dirs:
        d = Path(d)
        if (d / "config.json").exists():
            out.append(d)
        elif d.is_dir():
            out.extend(sorted(p for p in d.iterdir() if (p / "config.json").exists()))
    return list(dict.fromkeys(out))


def forget_in_artifacts(user: str, dirs: Iterable[str | Path]) -> list[str]:
    """Rewrite every saved model under `dirs` that knows `user` without them; the names of
    the folders rewritten."""
    from lmrec.models.base import Recommender

    done = []
    for path in _artifacts(dirs):
        try:
            model = Recommender.load(path)
        except Exception as exc:  # not a model this lmrec reads: say so, go on
            log.warning("erasure: cannot read %s: %s", path.name, exc)
            continue
        if model.forget_users([user]):
            model.save(path)
            done.append(path.name)
    return done


def erase_user(
    store: Store, user: str, model_dirs: Iterable[str | Path] = (), *, vacuum: bool = True
) -> ErasureReport:
    """Erase `user` everywhere this lmrec keeps data (module docstring); `vacuum`: also
    rebuild a SQLite file (`Store.compact`)."""
    row = store.get("user", user)
    if row is None:
        return ErasureReport(False, models=forget_in_artifacts(user, model_dirs))
    report = store.erase_user(user, profile_hashes(row.get("attributes"), row.get("tags")))
    models = forget_in_artifacts(user, model_dirs)
    store.compact(vacuum)
    from lmrec.text.cache import clear_memo

    clear_memo()  # vectors of their texts may be in this process's memo
    return ErasureReport(True, report or {}, models)
