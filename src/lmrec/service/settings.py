"""`Settings`: everything the service is configured with, typed and validated."""

from __future__ import annotations

__all__ = ["SCOPES", "Settings"]

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lmrec.errors import LmrecError

#: Scopes of API keys, each including the ones before it.
SCOPES: tuple[str, ...] = ("read", "write", "admin")

Scope = Literal["read", "write", "admin"]


class Settings(BaseModel):
    """Configuration of `create_app`; `lmrec serve` builds it from its options."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    db: str | None = None
    """Store URL (None: $LMREC_DB, else sqlite:///lmrec.db)."""
    models: list[str] = Field(default_factory=list)
    """Saved model directories to load at start, as DIR or NAME=DIR (name: the directory name)."""
    models_dir: str | None = None
    """A folder whose subfolders are model versions; retrained versions are saved here."""
    active: str | None = None
    """Version answering by default (None: the first of `models`, else the newest of models_dir)."""
    api_keys: dict[str, Scope] = Field(default_factory=dict)
    """API key -> scope: read (answers), write (+ feedback, items, users), admin (+ models)."""
    auth: bool = True
    """Require API keys. False only for local use: every request then has the admin scope."""
    max_body_bytes: int = Field(1 << 20, ge=1024)
    """Requests with a larger body are refused with 413."""
    max_batch_events: int = Field(10_000, ge=1)
    """Most feedback events in one batch request."""
    max_n: int = Field(1000, ge=1)
    """Most items one answer may ask for."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed by CORS; empty (the default) turns CORS off."""
    flush_ms: float = Field(2.0, ge=0)
    """The feedback writer waits at most this long to gather events into one transaction."""
    flush_events: int = Field(2000, ge=1)
    """...or until this many events are waiting."""
    index: Literal["auto", "flat", "hnsw", "ivf", "off"] = "auto"
    """Retrieval index of embedding models and of item search (off: score every item)."""
    exact_limit: int = Field(50_000, ge=1)
    """With index=auto, catalogues up to this many items are searched exactly."""
    search_encoder: str | None = None
    """Text encoder of item search (None: the active text model's, else 'minilm')."""
    warm_search: bool = True
    """Build the item search index in the background at start (else on the first search)."""
    busy_timeout_s: float = Field(30.0, ge=0)
    """How long a SQLite write waits for a lock another process holds (then: 503)."""
    threads: int = Field(0, ge=0)
    """Cap on BLAS/FAISS threads (0: leave as is)."""
    group_threads: int = Field(1, ge=1)
    """Model calls of one batch of user requests that run side by side, each on its own
    thread (the arms of an A/B experiment, different categories or models); 1 (the
    default): one after the other. With EASE on ML-100K, 2 did not lower the latency of an
    A/B experiment (`benchmarks/experiments.md`): try it for slow models."""
    batch_threads: int = Field(2, ge=1)
    """Batches of concurrent user requests too slow for the event loop (by their model's
    recent cost per request) run on up to this many threads side by side: a batch is cut
    across the free threads, 8 requests a part at least (1: one batch at a time). Each answer
    is the same either way."""
    follow_store: bool = False
    """Before each answer, read the feedback other processes wrote to the store (several
    workers or hosts on one store; `lmrec serve --workers N` turns it on)."""

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if len(key) < 8:
                raise ValueError("API keys must be at least 8 characters long")
        return v

    def check(self) -> None:
        """Refuse a configuration that would serve without protection by accident."""
        if self.auth and not self.api_keys:
            raise LmrecError(
                "no API keys configured: give --api-key SCOPE:KEY (or $LMREC_API_KEYS), or "
                "--no-auth to serve without keys for local use"
            )
