"""`RerankConfig`: how a model's lists are re-ranked, one validated object for the CLI, the
evaluation runner and the service; and `Filters`, the business rules it carries."""

from __future__ import annotations

__all__ = ["METHOD_NAMES", "RELEVANCES", "SIMILARITIES", "Filters", "RerankConfig"]

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lmrec.errors import LmrecError

Method = Literal["maxsum", "mmr", "dpp", "none"]
Relevance = Literal["scores", "rank", "prob"]
SimilaritySource = Literal["categories", "jaccard", "text"]
Order = Literal["relevance", "greedy"]

METHOD_NAMES: tuple[str, ...] = ("maxsum", "mmr", "dpp", "none")
RELEVANCES: tuple[str, ...] = ("scores", "rank", "prob")
SIMILARITIES: tuple[str, ...] = ("categories", "jaccard", "text")


def _invalid(what: str, exc: ValidationError) -> LmrecError:
    why = "; ".join(
        f"{'.'.join(str(x) for x in e['loc']) or 'options'}: {e['msg']} (got {e.get('input')!r})"
        for e in exc.errors()
    )
    return LmrecError(f"invalid {what}: {why}")


class Filters(BaseModel):
    """Business rules applied before ranking (see `lmrec.rerank.filters.allowed_items`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    exclude_items: tuple[str, ...] = ()
    """Item ids never to recommend."""
    include_items: tuple[str, ...] | None = None
    """The only item ids allowed (None: all)."""
    exclude_categories: tuple[str, ...] = ()
    """Items carrying any of these categories are removed."""
    include_categories: tuple[str, ...] | None = None
    """Only items carrying at least one of these categories are kept (None: all)."""
    min_score: float | None = Field(None, allow_inf_nan=False)
    """Items the model scores below this are dropped (lists may come out shorter)."""

    @property
    def empty(self) -> bool:
        """No rule at all."""
        return self == Filters()

    @property
    def only_min_score(self) -> bool:
        """At most the score floor: no rule on which items are allowed."""
        return self == Filters(min_score=self.min_score)

    def mask(self, item_ids: Any, categories: Any) -> Any:
        """Boolean mask over the catalogue (a `Vocabulary` of item ids) of the allowed items;
        `categories` per item index (needed by the category rules)."""
        from lmrec.rerank.filters import allowed_items

        return allowed_items(self, item_ids, categories)


class RerankConfig(BaseModel):
    """How to re-rank a model's candidate pool: one default for the CLI, the evaluation runner
    and the service (chosen on validation splits, `benchmarks/rerank.md`).

    Build it with `RerankConfig.of(**fields)` (a person's mistake raises `LmrecError`) or the
    constructor (pydantic's `ValidationError`); `replace(**changes)` gives a validated copy.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    method: Method = "maxsum"
    """Greedy selection: maxsum (Gollapudi & Sharma 2009), mmr (Carbonell & Goldstein 1998),
    dpp (Chen et al. 2018), or none (the model's order, under constraints and filters)."""
    diversity: float = Field(0.0, ge=0.0, le=1.0)
    """Diversity weight d in [0, 1]: 0 keeps the model's order, 1 ignores relevance."""
    pool: int = Field(50, ge=1)
    """How many of the model's top items are re-ranked."""
    similarity: SimilaritySource = "categories"
    """Item similarity: categories (cosine of category sets), jaccard (their Jaccard index,
    the measure of diversity@k) or text (cosine of text vectors)."""
    relevance: Relevance = "scores"
    """What is traded against diversity: scores (min-max scaled over the pool), rank
    ((rank + 1)^-1/2), or prob (calibrated softmax; fit temperature and rank_power with
    `lmrec.rerank.calibrate`)."""
    temperature: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    """Softmax temperature of relevance=prob."""
    rank_power: float = Field(0.0, allow_inf_nan=False)
    """Rank term b of relevance=prob: softmax(score / T - b log(rank + 1))."""
    discount: bool = True
    """Weigh relevance in slot t by the DCG discount 1 / log2(t + 2) (false: the published
    methods)."""
    order: Order = "relevance"
    """Show the chosen items by the model's score (relevance) or in the order chosen (greedy)."""
    local_search: bool = False
    """maxsum only: improve the greedy list by single swaps (not with category constraints)."""
    max_per_category: int | None = Field(None, ge=1)
    """At most this many chosen items may share a category (None: no cap)."""
    min_per_category: dict[str, int] = Field(default_factory=dict)
    """Category -> at least this many chosen items of it, when the pool has them."""
    filters: Filters = Field(default_factory=Filters)
    """Items removed before ranking (ids, categories, a score floor)."""
    fair_categories: tuple[str, ...] = ()
    """Fair re-ranking (FA*IR): items of any of these categories (providers, brands) are the
    protected group."""
    fair_share: float = Field(0.0, ge=0.0, lt=1.0)
    """FA*IR target proportion p of protected items in every prefix of a list (0: off)."""
    fair_alpha: float = Field(0.1, gt=0.0, lt=1.0)
    """FA*IR significance: a prefix of length t holds at least binom.ppf(alpha, t, p)."""

    @model_validator(mode="after")
    def _consistent(self) -> RerankConfig:
        if self.local_search and self.method != "maxsum":
            raise ValueError(f"local search is for maxsum only, not {self.method!r}")
        if self.local_search and self.constrained:
            raise ValueError("max-sum local search does not support category constraints")
        bad = {c: v for c, v in self.min_per_category.items() if v < 0}
        if bad:
            raise ValueError(f"min_per_category must be >= 0, got {bad}")
        return self

    @classmethod
    def of(cls, **fields: Any) -> RerankConfig:
        """A validated config; invalid or unknown fields raise `LmrecError` naming them."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise _invalid("re-ranking options", exc) from None

    def replace(self, **changes: Any) -> RerankConfig:
        """A validated copy with these fields changed (e.g. `**calibration.params()`)."""
        return RerankConfig.of(**{**self.model_dump(), **changes})

    @property
    def diversifies(self) -> bool:
        """Whether a diversity method runs (a similarity is needed)."""
        return self.method != "none" and self.diversity > 0

    @property
    def fair(self) -> bool:
        """Whether the FA*IR prefix minimums apply."""
        return bool(self.fair_categories) and self.fair_share > 0

    @property
    def constrained(self) -> bool:
        """Whether category caps or minimums (FA*IR's included) apply."""
        return self.max_per_category is not None or bool(self.min_per_category) or self.fair

    @property
    def active(self) -> bool:
        """Whether re-ranking changes anything: diversity, category constraints or filters."""
        return self.diversifies or self.constrained or not self.filters.empty
