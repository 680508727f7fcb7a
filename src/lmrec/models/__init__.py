"""Recommenders behind one contract (`lmrec.models.base.Recommender`) and their registry.

The registry maps a model name to "module:Class"; classes are imported on first use so that
`import lmrec.models` does not pull in torch or implicit.
"""

from __future__ import annotations

__all__ = ["REGISTRY", "create_model", "get_model_class", "model_names"]

import importlib
from typing import TYPE_CHECKING, Any

from lmrec.errors import LmrecError

if TYPE_CHECKING:
    from lmrec.models.base import Recommender

REGISTRY: dict[str, str] = {
    "popularity": "lmrec.models.popularity:Popularity",
    "random": "lmrec.models.popularity:Random",
    "itemknn": "lmrec.models.knn:ItemKNN",
    "userknn": "lmrec.models.knn:UserKNN",
    "ease": "lmrec.models.ease:EASE",
    "als": "lmrec.models.mf:ALS",
    "bpr": "lmrec.models.mf:BPR",
    "tfidf": "lmrec.models.content:TfidfContent",
    "lmcontent": "lmrec.models.lmcontent:LMContent",
    "lmmf": "lmrec.models.lmmf:LMMF",
    "coldstart_user": "lmrec.models.coldstart_user:ColdStartUser",
    "coldstart_item": "lmrec.models.coldstart_item:ColdStartItem",
    "sasrec": "lmrec.models.sequential:SASRec",
    "hybrid": "lmrec.models.blend:Hybrid",
    "dualsasrec": "lmrec.models.sequential:DualSASRec",
    "bert4rec": "lmrec.models.sequential:BERT4Rec",
    "xlnet": "lmrec.models.sequential:XLNet",
    "blend": "lmrec.models.blend:Blend",
    "twostage": "lmrec.models.twostage:TwoStage",
    "baseline": "lmrec.models.rating:Baseline",
    "knnbaseline": "lmrec.models.rating:KNNBaseline",
    "biasedmf": "lmrec.models.rating_mf:BiasedMF",
    "svdpp": "lmrec.models.rating_mf:SVDPP",
    "lmrating": "lmrec.models.rating_mf:LMRating",
    "bayesmf": "lmrec.models.rating_bayes:BayesMF",
    "ratingblend": "lmrec.models.rating_blend:RatingBlend",
}


def model_names() -> list[str]:
    return sorted(REGISTRY)


def get_model_class(name: str) -> type[Recommender]:
    """The model class registered under `name`."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise LmrecError(f"unknown model {name!r}; available: {', '.join(model_names())}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def create_model(name: str, **params: Any) -> Recommender:
    """A new, unfitted model with validated parameters."""
    return get_model_class(name)(**params)
