"""The second stage of `twostage`: rankers that order one query's candidates.

Each ranker is a component behind one contract (`CandidateRanker`), chosen by the two-stage
config's `ranker` field from `RANKERS`:

- "lightgbm": a LightGBM LambdaRank model over the feature table (saved as LightGBM's text
  model format, `ranker.txt`); explanations are LightGBM's `pred_contrib` (exact TreeSHAP).
  Its trees are compiled to machine code for scoring (lleaves, on LLVM; the two-stage
  config's `compile_trees`): the same scores, 7-10x faster than LightGBM's own predict.
- "dcn": a DCN-v2 network in PyTorch (`lmrec.nn.dcn`) over the same table, standardised, with
  the item's and the user's text vectors as further dense inputs when the "text" feature group
  is on; trained with a listwise softmax (or pairwise) loss over each query's candidates,
  early-stopped on NDCG@10 of the ranker's validation queries; saved as its state dict
  (arrays in the model's state.npz); explanations are integrated gradients x input, summed
  per feature (and per text vector), plus the baseline's score as "bias".

Both learn from the same rows (`RankRows`: the candidates of each training query, negatives
taken from the candidate stage itself) and the same seeded split of queries into training and
validation ones, which the two-stage model makes.
"""

from __future__ import annotations

__all__ = ["RANKERS", "CandidateRanker", "DCNConfig", "DCNRanker", "LightGBMRanker", "RankRows"]

import logging
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lmrec.errors import LmrecError

_log = logging.getLogger("lmrec.twostage")

if TYPE_CHECKING:
    from lmrec.models.twostage import TwoStageConfig


class DCNConfig(BaseModel):
    """Hyperparameters of the DCN-v2 ranker (`ranker="dcn"`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    structure: Literal["stacked", "parallel"] = "stacked"
    """Deep MLP after the cross network (stacked) or beside it on x0 (parallel)."""
    cross_layers: int = Field(3, ge=0)
    """Cross layers x_{l+1} = x0 * (W x_l + b) + x_l."""
    deep_layers: list[int] = Field(default_factory=lambda: [128, 64])
    """Widths of the MLP's hidden layers (ReLU)."""
    text_vectors: bool = True
    """Feed the item's and the user's text vectors (when the "text" feature group is on)."""
    text_size: int = Field(16, ge=1)
    """Width that one shared learned matrix projects each text vector to."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout after each MLP layer."""
    loss: Literal["softmax", "pairwise"] = "softmax"
    """Listwise softmax cross entropy over a query's candidates, or pairwise logistic."""
    epochs: int = Field(100, ge=1)
    """Passes over the training queries at most (early stopping usually ends sooner)."""
    patience: int = Field(5, ge=1)
    """Stop after this many epochs without a better validation NDCG@10."""
    batch_size: int = Field(32, ge=1)
    """Queries per step."""
    learning_rate: float = Field(1e-3, gt=0)
    """AdamW learning rate."""
    weight_decay: float = Field(1e-4, ge=0)
    """AdamW decoupled weight decay (weights only)."""


@dataclass
class RankRows:
    """Rows to score: features (N, F) in the two-stage model's `feature_names` order, each
    row's candidate item (N,) and query (N,, an index into `user_text`); the item text vectors
    (n_items, D) and each query's user text vector (Q, D) for rankers that read text (else
    None)."""

    x: np.ndarray
    item: np.ndarray
    query: np.ndarray
    item_text: np.ndarray | None = None
    user_text: np.ndarray | None = None


@dataclass
class Fitted:
    """What training reports: the best iteration (boosting round or epoch) and the ranker's
    validation NDCG@10 there (NaN without validation)."""

    best_iteration: int
    valid_ndcg: float


class CandidateRanker(ABC):
    """Orders the candidates of each query: learns from labelled query groups, scores rows,
    explains a score as one contribution per input name plus "bias", and persists itself."""

    kind: ClassVar[str]
    #: How `contributions` are computed, for explanations.
    method: ClassVar[str]

    def __init__(self, config: TwoStageConfig, feature_names: list[str], text_dim: int):
        self.config = config
        self.feature_names = list(feature_names)
        self.text_dim = text_dim

    @property
    def uses_text(self) -> bool:
        """Whether `RankRows` must carry the text vectors."""
        return False

    @property
    def input_names(self) -> list[str]:
        """Names of the contributions (without "bias"), in order."""
        return self.feature_names

    @abstractmethod
    def fit(
        self, rows: RankRows, y: np.ndarray, groups: list[np.ndarray], is_valid: np.ndarray
    ) -> Fitted:
        """Learn from relevance `y` (N,) of the rows of each group (row indices; group g is
        query g), early-stopping on the groups where `is_valid`."""

    @abstractmethod
    def predict(self, rows: RankRows) -> np.ndarray:
        """(N,) float64 scores."""

    @abstractmethod
    def contributions(self, rows: RankRows) -> np.ndarray:
        """(N, len(input_names) + 1): each input's part of the score, then the bias; each row
        adds up to its score."""

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to keep in the model's state.npz."""
        return {}

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:  # noqa: B027 - optional hook
        """Restore what `state` returned."""

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Get ready to score many requests (once, after fitting or loading)."""

    def write(self, path: Path) -> None:  # noqa: B027 - optional hook
        """Write files beside the model's state.npz."""

    def read(self, path: Path) -> None:  # noqa: B027 - optional hook
        """Read what `write` wrote."""


def _ndcg10(scores: np.ndarray, rel: np.ndarray) -> float:
    """NDCG@10 of one query's candidates (binary or graded relevance, LightGBM's gains
    2^rel - 1 equal rel for 0/1 labels)."""
    top = np.argsort(-scores, kind="stable")[:10]
    disc = 1.0 / np.log2(np.arange(2, 12))
    dcg = float((rel[top] * disc[: len(top)]).sum())
    ideal = np.sort(rel)[::-1][:10]
    idcg = float((ideal * disc[: len(ideal)]).sum())
    return dcg / idcg if idcg > 0 else 0.0


# -- LightGBM LambdaRank ------------------------------------------------------------------------


class LightGBMRanker(CandidateRanker):
    """LightGBM LambdaRank over the feature table (the two-stage config's `epochs`,
    `learning_rate`, `num_leaves`, `min_data_in_leaf` and `lightgbm` parameters)."""

    kind = "lightgbm"
    method = "twostage: LightGBM pred_contrib"

    def __init__(self, config: TwoStageConfig, feature_names: list[str], text_dim: int):
        super().__init__(config, feature_names, text_dim)
        self.booster: Any = None
        self._compiled: Any = None  # lleaves.Model of `booster`, False: not to be had
        self._compile_lock = threading.Lock()

    def _params(self) -> dict[str, Any]:
        c = self.config
        return {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [10],
            "learning_rate": c.learning_rate,
            "num_leaves": c.num_leaves,
            "min_data_in_leaf": c.min_data_in_leaf,
            "num_threads": c.threads,
            "seed": c.seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
            **c.lightgbm,
        }

    def fit(
        self, rows: RankRows, y: np.ndarray, groups: list[np.ndarray], is_valid: np.ndarray
    ) -> Fitted:
        import lightgbm as lgb

        c, x, params = self.config, rows.x, self._params()

        def part(mask: np.ndarray) -> lgb.Dataset:
            gs = [g for g, m in zip(groups, mask, strict=True) if m]
            idx = np.concatenate(gs)
            return lgb.Dataset(
                x[idx], y[idx], group=[len(g) for g in gs], feature_name=self.feature_names
            )

        train = part(~is_valid)
        sets, names = [train], ["train"]
        callbacks = []
        if is_valid.any():
            sets, names = [part(is_valid)], ["valid"]
            callbacks = [lgb.early_stopping(max(10, c.epochs // 10), verbose=False)]
        record: dict[str, Any] = {}
        callbacks.append(lgb.record_evaluation(record))
        booster = lgb.train(
            params, train, c.epochs, valid_sets=sets, valid_names=names, callbacks=callbacks
        )
        best = booster.best_iteration or booster.current_iteration()
        curve = record.get(names[0], {}).get("ndcg@10", [])
        ndcg = float(curve[best - 1]) if len(curve) >= best else float("nan")
        if c.ranker_refit and is_valid.any():
            booster = lgb.train(params, part(np.ones(len(groups), bool)), best)
        self.booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        self._compiled = None
        return Fitted(int(best), ndcg)

    def prepare(self) -> None:
        self._compiled_trees()

    def _compiled_trees(self) -> Any:
        """The booster's trees as machine code (lleaves), built on first use; None where
        `compile_trees` is off or lleaves cannot build them (then LightGBM predicts)."""
        if self._compiled is None:
            with self._compile_lock:
                if self._compiled is None:
                    self._compiled = self._compile() if self.config.compile_trees else False
        return self._compiled or None

    def _compile(self) -> Any:
        """lleaves' build of the booster, checked against LightGBM on probe rows (lleaves
        ignores what it does not know, e.g. linear trees); False where it fails or differs."""
        try:
            import lleaves

            text = self.booster.model_to_string()
            with tempfile.TemporaryDirectory(prefix="lmrec-ranker-") as tmp:
                path = Path(tmp) / "ranker.txt"
                path.write_text(text)
                model = lleaves.Model(model_file=str(path))
                model.compile()
            probe = _probe_rows(text, self.booster.num_feature())
            want = self.booster.predict(probe, num_threads=1)
            got = model.predict(probe, n_jobs=1)
            if not np.allclose(got, want, rtol=1e-9, atol=1e-9):
                raise ValueError(
                    f"compiled scores differ from LightGBM's by up to {np.abs(got - want).max():.3g}"
                )
            return model
        except Exception as exc:  # any failure: LightGBM's own predict
            _log.warning(
                "twostage: ranker trees not compiled (%s: %s); LightGBM predicts",
                type(exc).__name__,
                exc,
            )
            return False

    def predict(self, rows: RankRows) -> np.ndarray:
        compiled = self._compiled_trees()
        if compiled is not None:  # one thread: the service runs batches side by side
            x = np.ascontiguousarray(rows.x, np.float64)
            return np.asarray(compiled.predict(x, n_jobs=1), np.float64)
        # One thread for a few requests' candidates: OpenMP's start-up and barriers cost
        # more than 200 rows of trees (and much more on a busy machine).
        threads = 1 if len(rows.x) < 20_000 else self.config.threads
        return np.asarray(self.booster.predict(rows.x, num_threads=threads), np.float64)

    def contributions(self, rows: RankRows) -> np.ndarray:
        return np.asarray(self.booster.predict(rows.x, pred_contrib=True), np.float64)

    def write(self, path: Path) -> None:
        (path / "ranker.txt").write_text(self.booster.model_to_string())

    def read(self, path: Path) -> None:
        import lightgbm as lgb

        if not (path / "ranker.txt").exists():
            raise LmrecError(f"{path}: a twostage artifact without its ranker.txt")
        self.booster = lgb.Booster(model_str=(path / "ranker.txt").read_text())
        self._compiled = None


def _probe_rows(model_text: str, n_features: int, n: int = 256) -> np.ndarray:
    """(n, n_features) rows spread over each feature's range in a LightGBM text model
    (`feature_infos`: [min:max], or the category values), a tenth of the cells missing."""
    infos: list[str] = []
    for line in model_text.splitlines():
        if line.startswith("feature_infos="):
            infos = line.split("=", 1)[1].split()
            break
    rng = np.random.default_rng(0)
    x = np.zeros((n, n_features))
    for j, info in enumerate(infos[:n_features]):
        if info.startswith("[") and ":" in info:
            lo, hi = (float(v) for v in info[1:-1].split(":"))
            x[:, j] = rng.uniform(lo, hi, n)
        elif info != "none":  # categorical: the values seen
            x[:, j] = rng.choice([float(v) for v in info.split(":")], n)
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


# -- DCN-v2 ------------------------------------------------------------------------------------

#: Integrated-gradient points per explanation.
IG_STEPS = 64


class _DCNTask:
    """Batches of training queries and NDCG@10 of the validation queries, for the trainer."""

    def __init__(
        self,
        rows: RankRows,
        y: np.ndarray,
        groups: list[np.ndarray],
        train: np.ndarray,
        valid: np.ndarray,
        config: DCNConfig,
        seed: int,
    ):
        import torch

        self.rows, self.y, self.groups = rows, y, groups
        self.train, self.valid = train, valid
        self.batch_size, self.seed = config.batch_size, seed
        self.x = torch.from_numpy(np.ascontiguousarray(rows.x, np.float32))
        self.item_text = _tensor(rows.item_text)
        self.user_text = _tensor(rows.user_text)

    def _batch(self, gs: np.ndarray) -> Any:
        import torch

        from lmrec.nn.dcn import RankBatch

        width = max(len(self.groups[g]) for g in gs)
        idx = np.zeros((len(gs), width), np.int64)
        mask = np.zeros((len(gs), width), bool)
        for r, g in enumerate(gs):
            idx[r, : len(self.groups[g])] = self.groups[g]
            mask[r, : len(self.groups[g])] = True
        t = torch.from_numpy(idx)
        return RankBatch(
            self.x[t],
            torch.from_numpy(self.rows.item[idx]),
            torch.from_numpy(np.where(mask, self.y[idx], 0.0).astype(np.float32)),
            torch.from_numpy(mask),
            self.item_text,
            None if self.user_text is None else self.user_text[torch.from_numpy(gs)],
        )

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[Any]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.train)
        steps = list(range(0, len(order), self.batch_size))
        for s in steps[rank::world]:
            yield self._batch(order[s : s + self.batch_size])

    def validate(self, module: Any, rank: int, world: int) -> tuple[float, float]:
        import torch

        if not len(self.valid):
            return 0.0, 0.0
        total = 0.0
        mine = self.valid[rank::world]
        for s in range(0, len(mine), 256):
            gs = mine[s : s + 256]
            idx = np.concatenate([self.groups[g] for g in gs])
            t = torch.from_numpy(idx)
            pred = module.scores(
                self.x[t],
                torch.from_numpy(self.rows.item[idx]),
                torch.from_numpy(self.rows.query[idx]),
                self.item_text,
                self.user_text,
            ).numpy()
            start = 0
            for g in gs:
                n = len(self.groups[g])
                total += _ndcg10(pred[start : start + n], self.y[self.groups[g]])
                start += n
        return total, float(len(mine))


def _tensor(a: np.ndarray | None) -> Any:
    import torch

    return None if a is None else torch.from_numpy(np.ascontiguousarray(a, np.float32))


class DCNRanker(CandidateRanker):
    """DCN-v2 (`lmrec.nn.dcn.DCNv2`) over the standardised feature table and text vectors."""

    kind = "dcn"
    method = "twostage: DCN-v2 integrated gradients x input"

    def __init__(self, config: TwoStageConfig, feature_names: list[str], text_dim: int):
        super().__init__(config, feature_names, text_dim)
        self.net: Any = None

    @property
    def uses_text(self) -> bool:
        return bool(self.text_dim) and self.config.dcn.text_vectors

    @property
    def input_names(self) -> list[str]:
        extra = ["text.item_vector", "text.user_vector"] if self.uses_text else []
        return [*self.feature_names, *extra]

    def _build(self) -> Any:
        from lmrec.nn.dcn import DCNv2

        d = self.config.dcn
        return DCNv2(
            len(self.feature_names),
            text_dim=self.text_dim if self.uses_text else 0,
            text_size=d.text_size,
            cross_layers=d.cross_layers,
            deep_layers=d.deep_layers,
            structure=d.structure,
            dropout=d.dropout,
            loss=d.loss,
        )

    def fit(
        self, rows: RankRows, y: np.ndarray, groups: list[np.ndarray], is_valid: np.ndarray
    ) -> Fitted:
        import torch

        from lmrec.nn.trainer import TrainConfig, Trainer

        c, d = self.config, self.config.dcn
        if self.uses_text and (rows.item_text is None or rows.user_text is None):
            raise LmrecError("the DCN ranker reads text vectors, but the rows carry none")
        train_g, valid_g = np.flatnonzero(~is_valid), np.flatnonzero(is_valid)
        if not len(train_g):
            raise LmrecError("the DCN ranker has no training queries (all are validation ones)")
        torch.manual_seed(c.seed)
        net = self._build()
        net.set_scaler(rows.x[np.concatenate([groups[g] for g in train_g])])

        def train(epochs: int, train_on: np.ndarray, valid_on: np.ndarray) -> Any:
            task = _DCNTask(rows, y, groups, train_on, valid_on, d, c.seed)
            trainer = Trainer(
                TrainConfig(
                    epochs=epochs,
                    patience=d.patience if len(valid_on) else None,
                    learning_rate=d.learning_rate,
                    weight_decay=d.weight_decay,
                    seed=c.seed,
                    device="cpu",
                    num_threads=c.threads,
                )
            )
            return trainer.fit(net, task, label="twostage dcn ranker")

        result = train(d.epochs, train_g, valid_g)
        best = result.best_epoch
        ndcg = result.best_score if len(valid_g) else float("nan")
        if c.ranker_refit and len(valid_g):
            torch.manual_seed(c.seed)
            scaler = (net.mean.clone(), net.std.clone())
            net = self._build()
            net.mean.copy_(scaler[0])
            net.std.copy_(scaler[1])
            train(best, np.arange(len(groups)), np.zeros(0, np.int64))
        net.eval()
        self.net = net
        return Fitted(int(best), float(ndcg))

    def _x0(self, rows: RankRows) -> Any:
        import torch

        return self.net.inputs(
            torch.from_numpy(np.ascontiguousarray(rows.x, np.float32)),
            torch.from_numpy(np.asarray(rows.item, np.int64)),
            torch.from_numpy(np.asarray(rows.query, np.int64)),
            _tensor(rows.item_text) if self.uses_text else None,
            _tensor(rows.user_text) if self.uses_text else None,
        )

    def predict(self, rows: RankRows) -> np.ndarray:
        import torch

        out = np.zeros(len(rows.x), np.float64)
        with torch.no_grad():
            for s in range(0, len(rows.x), 65536):
                part = RankRows(
                    rows.x[s : s + 65536],
                    rows.item[s : s + 65536],
                    rows.query[s : s + 65536],
                    rows.item_text,
                    rows.user_text,
                )
                out[s : s + len(part.x)] = self.net.head_of(self._x0(part)).numpy()
        return out

    def contributions(self, rows: RankRows) -> np.ndarray:
        import torch

        with torch.no_grad():
            x0 = self._x0(rows)
        attr, base = self.net.attributions(x0, IG_STEPS)
        a = attr.numpy().astype(np.float64)
        f, t = len(self.feature_names), self.net.text_size
        cols = [a[:, :f]]
        if self.uses_text:
            cols += [a[:, f : f + t].sum(1, keepdims=True), a[:, f + t :].sum(1, keepdims=True)]
        return np.concatenate([*cols, np.full((len(a), 1), base)], axis=1)

    def state(self) -> dict[str, np.ndarray]:
        from lmrec.nn.trainer import state_arrays

        return state_arrays(self.net)

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        from lmrec.nn.trainer import load_state_arrays

        self.net = self._build()
        load_state_arrays(self.net, state, "saved twostage DCN ranker")
        self.net.eval()


#: Ranker kind (the two-stage config's `ranker`) -> its component class.
RANKERS: dict[str, type[CandidateRanker]] = {"lightgbm": LightGBMRanker, "dcn": DCNRanker}
