"""Request and response bodies of the REST service (pydantic).

Request bodies refuse unknown fields. Response models describe the answers in the OpenAPI
document; the service builds each answer once, as plain JSON data in the shape of its model
(`tests/test_service.py` checks real answers against them), and sends it without
re-validation, which would cost the hot paths more than the answer itself.
"""

from __future__ import annotations

__all__ = [
    "RESPONSES",
    "Deleted",
    "ErrorBody",
    "Feedback",
    "FeedbackAccepted",
    "FeedbackBatch",
    "Health",
    "Item",
    "ItemBody",
    "Job",
    "ModelVersion",
    "Models",
    "QueryBody",
    "Reason",
    "Recommendations",
    "ScoredItem",
    "SearchResults",
    "Similar",
    "TrainBody",
    "User",
    "UserBody",
    "VersionState",
    "Why",
    "Written",
    "rerank_config",
]

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from lmrec.ids import EVENT_PATTERN, ID_PATTERN, MAX_ID, event_name
from lmrec.models import REGISTRY
from lmrec.rerank.config import Method, RerankConfig, SimilaritySource

#: A user or item id (`lmrec.ids`: the importer's rule too).
Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN)]
#: An event name, stored in lower case (as the importer stores it).
EventName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=32, pattern=EVENT_PATTERN),
    AfterValidator(event_name),
]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=10_000)]
#: Largest candidate pool a request may ask to re-rank.
MAX_POOL = 10_000
#: Relevances a request may re-rank by (prob needs a calibration the service does not fit).
ServedRelevance = Literal["scores", "rank"]


def rerank_config(**given: Any) -> RerankConfig | None:
    """The `RerankConfig` of a request's re-ranking parameters (those given replace the
    defaults, the ones the CLI and the evaluation use); None when it would change nothing."""
    config = RerankConfig.of(**{k: v for k, v in given.items() if v is not None})
    return config if config.active else None


#: Unix seconds between 1970 and 2200.
Timestamp = Annotated[float, Field(ge=0, le=7_258_118_400)]


#: A flat attribute value (a string of at most 1000 characters, a number, a boolean or null).
AttrValue = Annotated[str, StringConstraints(max_length=1000)] | int | float | bool | None
#: Flat attributes: at most 100, names of 1 to 64 characters.
Attributes = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], AttrValue],
    Field(max_length=100),
]


class _Body(BaseModel):
    # strict: no coercion of JSON types (`ts: false`, `value: true`, `n: "5"` are refused);
    # integers are still numbers where a float is expected.
    model_config = ConfigDict(extra="forbid", strict=True)


def _scalar_attributes(v: dict[str, Any] | None) -> dict[str, Any] | None:
    """Attributes are flat: str, number, bool or null values, keys up to 64 characters."""
    if v is None:
        return v
    if len(v) > 100:
        raise ValueError("at most 100 attributes")
    for k, x in v.items():
        if not k or len(k) > 64:
            raise ValueError(f"attribute name {k!r} must have 1 to 64 characters")
        if x is not None and not isinstance(x, str | int | float | bool):
            raise ValueError(f"attribute {k!r} must be a string, number, boolean or null")
        if isinstance(x, float) and not math.isfinite(x):
            raise ValueError(f"attribute {k!r} must be a finite number")
        if isinstance(x, str) and len(x) > 1000:
            raise ValueError(f"attribute {k!r} is longer than 1000 characters")
    return v


class Feedback(_Body):
    """One event: a user did something with an item (view, click, cart, purchase, rating...)."""

    user: Id
    item: Id
    event: EventName = "view"
    value: float | None = Field(None, allow_inf_nan=False, description="e.g. the rating")
    ts: Timestamp | None = Field(None, description="Unix seconds (default: when received)")


class FeedbackBatch(_Body):
    events: list[Feedback] = Field(min_length=1)


class QueryBody(_Body):
    """An anonymous (or partly known) visitor: recent items, attributes, interest tags, text."""

    user: Id | None = None
    session: Id | None = Field(
        None, description="anonymous session id: running experiments bucket anonymous queries by it"
    )
    items: list[Id] = Field(default_factory=list, max_length=1000)
    events: list[EventName] | None = Field(None, max_length=1000)
    attributes: Attributes | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=100)
    text: Text | None = None
    time: Timestamp | None = Field(None, description="request time, Unix seconds (default: now)")
    context: dict[str, Any] | None = Field(
        None, description='context of the request for models that read it, e.g. {"event": "cart"}'
    )
    n: int = Field(10, ge=1, le=1000)
    model: Id | None = None
    exclude_seen: bool = True
    category: Tag | None = None
    diversity: float | None = Field(None, ge=0, le=1)
    method: Method | None = None
    similarity: SimilaritySource | None = None
    pool: int | None = Field(None, ge=1, le=MAX_POOL)
    relevance: ServedRelevance | None = None
    explain: bool = False

    def rerank(self) -> RerankConfig | None:
        """The re-ranking asked for (fields of `RerankConfig`; None: none)."""
        return rerank_config(
            diversity=self.diversity,
            method=self.method,
            similarity=self.similarity,
            pool=self.pool,
            relevance=self.relevance,
        )

    _attrs = field_validator("attributes")(_scalar_attributes)
    _context = field_validator("context")(_scalar_attributes)

    @field_validator("events")
    @classmethod
    def _events_len(cls, v: list[str] | None, info: Any) -> list[str] | None:
        items = info.data.get("items")
        if v is not None and items is not None and len(v) != len(items):
            raise ValueError(f"events must be as long as items ({len(v)} != {len(items)})")
        return v


class ItemBody(_Body):
    """Fields of an item; on update, only the given ones change."""

    title: Text | None = None
    description: Text | None = None
    categories: list[Tag] | None = Field(None, max_length=100)
    attributes: Attributes | None = None

    _attrs = field_validator("attributes")(_scalar_attributes)


class UserBody(_Body):
    """Fields of a user; on update, only the given ones change."""

    attributes: Attributes | None = None
    tags: list[Tag] | None = Field(None, max_length=100)
    consent_personal: bool | None = Field(
        None, description="false: answered with non-personal recommendations"
    )
    consent_training: bool | None = Field(
        None, description="false: left out of every snapshot models are trained on"
    )

    _attrs = field_validator("attributes")(_scalar_attributes)


class TrainBody(_Body):
    """Retrain a model on the current store and activate the new version when done."""

    model: Literal[tuple(REGISTRY)]  # type: ignore[valid-type]
    params: dict[str, Any] = Field(
        default_factory=dict, description="the model's parameters (`lmrec train --help`)"
    )
    activate: bool = True


# -- responses ---------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Reason(BaseModel):
    """One reason of an explanation (`lmrec.explain.Reason`; empty fields are left out)."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    weight: float = Field(description="share of the item's positive evidence, in [0, 1]")
    items: list[str] | None = None
    titles: list[str] | None = None
    contributions: list[float] | None = None
    attributes: Attributes | None = None
    tags: list[str] | None = None
    count: int | None = None
    text: str | None = None


class Why(_Out):
    """Why an item was recommended: a sentence and the reasons, strongest first."""

    sentence: str
    reasons: list[Reason]


class ScoredItem(_Out):
    item: str
    score: float | None = Field(description="the model's score (null where not finite)")
    why: Why | None = Field(None, description="only with explain=true")


class ExposureTag(_Out):
    """The experiment and arm that served an answer; `request_id` names its exposure."""

    name: str
    arm: str
    request_id: str


class RatedItem(_Out):
    item: str
    rating: float | None = Field(description="predicted rating (null: item not in the model)")


class Ratings(_Out):
    """Predicted ratings of items for a user, by a rating model (`predicts_ratings`)."""

    user: str
    model: str
    known_user: bool = Field(description="false: the user has no ratings in the model")
    items: list[RatedItem]


class Recommendations(_Out):
    """Top-n items and the version that answered (`fallback`: why a fallback answered)."""

    user: str | None
    model: str
    items: list[ScoredItem]
    fallback: str | None
    experiment: ExposureTag | None = Field(None, description="only inside a running experiment")


class Similar(_Out):
    """Items like an item: by the model (`source` model) or by text (new items)."""

    item: str
    model: str
    source: Literal["model", "text"]
    items: list[ScoredItem]


class SearchResults(_Out):
    query: str
    encoder: str
    items: list[ScoredItem]


class FeedbackAccepted(_Out):
    accepted: int = Field(description="events in the request")
    added: int = Field(description="events new to the store (repeats are counted once)")


class Item(_Out):
    item: str
    title: str | None
    description: str | None
    categories: list[str] | None
    attributes: dict[str, Any] | None
    created_at: float


class User(_Out):
    user: str
    attributes: dict[str, Any] | None
    tags: list[str] | None
    consent_personal: bool
    consent_training: bool
    created_at: float
    events_since_start: int


class Written(_Out):
    """An item or user created (201) or updated (200): `item` or `user` names it."""

    item: str | None = None
    user: str | None = None
    created: bool


class Deleted(_Out):
    item: str | None = None
    user: str | None = None
    deleted: Literal[True]


class ModelVersion(_Out):
    """A version; the fields after `error` are there once it is loaded."""

    version: str
    path: str
    state: Literal["available", "loading", "loaded", "failed"]
    error: str | None = None
    model: str | None = None
    items: int | None = None
    users: int | None = None
    load_seconds: float | None = None
    index: str | None = None
    new_items: bool | None = None


class Models(_Out):
    active: str | None
    versions: list[ModelVersion]


class VersionState(_Out):
    """A version being loaded (202), or loaded (with the active version)."""

    version: str
    state: Literal["loading", "loaded"]
    active: str | None = None


class Job(_Out):
    job: str
    model: str
    version: str
    state: Literal["running", "done", "failed"]
    fit_seconds: float | None = None
    error: str | None = None


class Health(_Out):
    status: Literal["ok", "loading"]
    active: str | None
    loaded: list[str]
    uptime_seconds: float
    search_index: Literal["ready", "not built"]
    feedback_committed: int
    feedback_queued: int
    feedback_followed: int
    """Events other processes wrote, read from the store (`follow_store`)."""
    pid: int
    """The answering process (one of several with `lmrec serve --workers N`)."""


class ErrorBody(_Out):
    """An error: what was wrong (and, for invalid requests, each problem)."""

    detail: str
    errors: list[str] | None = None


#: The error answers of every route, for the OpenAPI document.
RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": why}
    for code, why in (
        (400, "a bad value"),
        (401, "no or unknown API key"),
        (403, "the API key's scope is too narrow"),
        (404, "not found"),
        (409, "the state of the server forbids it (a version that cannot be loaded)"),
        (413, "body too large"),
        (422, "invalid request"),
        (503, "not ready (no model loaded) or the store failed"),
    )
}
