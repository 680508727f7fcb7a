"""Latent-factor rating models: `biasedmf` (r = mu + b_u + b_i + p_u.q_i, Koren, Bell &
Volinsky 2009), `svdpp` (SVD++: the user factor plus |N(u)|^-1/2 sum of y_j over the items the
user rated, Koren, KDD 2008) and `lmrating`, the LM-enhanced R = U.V^T + biases whose items
without ratings (cold items) are rated from their text vector (MiniLM by default) through a
text -> item-parameter map (`text_map`): a weighted ridge regression from the text vectors of
the items with ratings to their learned (b_i, q_i), its two penalties chosen by K-fold
cross-validation over those items on the rating error of the held-out items (the
regression-based latent factor model, Agarwal & Chen, KDD 2009; the attribute-to-feature
mapping of Gantner et al., ICDM 2010). By default the factors are trained without text (as
biasedmf); `text_training=True` instead trains a projection jointly, q_i = v_i + W x_i,
b_i = c_i + w.x_i, dropping the free parts v_i, c_i of a random `text_dropout` share of the
examples so that W learns to stand on its own (DropoutNet, Volkovs et al., NeurIPS 2017).

Training is Surprise's stochastic gradient descent (per-example squared error plus
reg * squared norms of the parameters it touches, learning rate per example) vectorised over
mini-batches of `batch_size` ratings with torch on the CPU; the text projection is trained by
Adam. A new user (no stored ratings) is folded in by ridge regression of their ratings on the
fixed item factors.
"""

from __future__ import annotations

__all__ = ["SVDPP", "BiasedMF", "BiasedMFConfig", "LMRating", "LMRatingConfig", "SVDPPConfig"]

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field, field_validator

from lmrec.data import Dataset
from lmrec.models.rating import FactorRatingConfig, FactorRatingModel, Ratings


class BiasedMFConfig(FactorRatingConfig):
    epochs: int = Field(40, ge=1)
    """Passes over the training ratings."""
    learning_rate: float = Field(0.007, gt=0)
    """SGD step per example (Surprise's lr_all)."""
    reg: float = Field(0.08, ge=0)
    """L2 weight of the factors (Surprise's reg_all for factors)."""
    reg_bias: float = Field(0.02, ge=0)
    """L2 weight of the biases."""
    init_std: float = Field(0.1, gt=0)
    """Standard deviation of the initial factors."""
    batch_size: int = Field(512, ge=1)
    """Ratings per vectorised SGD step."""
    num_threads: int = Field(1, ge=1, exclude=True)
    """Torch threads while training (a runtime setting, not saved)."""
    epsilon: float | None = Field(None, gt=0)
    """Differential privacy by DP-SGD (`lmrec.privacy.DPSGD`; biasedmf only; None: none):
    the item factors and biases are (epsilon, delta)-DP for adding or removing one user with
    all their ratings. Each step draws each user with chance dp_batch_size / n_users
    (Poisson sampling); a drawn user's own factor and bias are set by least squares, their
    gradient of the item parameters is clipped to `max_grad_norm` and Gaussian noise is added
    (learning rate: learning_rate * dp_batch_size on the noisy mean). User factors are each
    user's own (joint DP); mu and the rating scale are not private."""
    delta: float = Field(1e-5, gt=0, lt=1)
    """The delta of (epsilon, delta)-DP (must be below 1 / the number of users)."""
    max_grad_norm: float = Field(1.0, gt=0)
    """With epsilon: the L2 bound of one user's gradient of the item parameters in a step."""
    dp_batch_size: int = Field(64, ge=1)
    """With epsilon: users per DP-SGD step (expected; Poisson sampling)."""


class SVDPPConfig(BiasedMFConfig):
    epochs: int = Field(20, ge=1)
    """Passes over the training ratings."""
    reg: float = Field(0.05, ge=0)
    """L2 weight of the factors (Surprise's reg_all for factors)."""
    reg_implicit: float = Field(0.05, ge=0)
    """L2 weight of the implicit factors y_j (per example, on the mean of its user's y^2)."""
    implicit: bool = True
    """Add |N(u)|^-1/2 sum_j y_j over the items u rated to the user factor."""


class LMRatingConfig(SVDPPConfig):
    epochs: int = Field(40, ge=1)
    """Passes over the training ratings."""
    reg: float = Field(0.08, ge=0)
    """L2 weight of the factors."""
    implicit: bool = False
    """Add the SVD++ implicit term |N(u)|^-1/2 sum_j y_j to the user factor."""
    encoder: str = "minilm"
    """Text encoder spec of the item text vectors ('minilm', 'tfidf[:DIM]', 'st:PATH')."""
    item_template: str | None = None
    """str.format template of item text (title, description, categories, attributes)."""
    text_learning_rate: float = Field(1e-3, gt=0)
    """Adam learning rate of the text projection W, w."""
    text_training: bool = False
    """Train the text projection W, w jointly with the factors by SGD/Adam (q_i = v_i + W x_i,
    b_i = c_i + w.x_i, with `text_dropout`). False (the default): train the factors and biases
    without text, as biasedmf, and rate cold items through `text_map` alone. A jointly trained
    W can fit the ratings of every training item through its text vector, so a map fitted to
    the joint parameters cannot be cross-validated over those items."""
    text_dropout: float = Field(0.3, ge=0, lt=1)
    """With text_training: share of training examples whose free item parts (v_i, c_i) are
    dropped."""
    text_map: bool = True
    """After training, give the items without ratings (cold items) the item bias and factor
    of a ridge regression from the text vectors of the items with ratings to their learned
    b_i, q_i (weighted by their numbers of ratings, an unpenalised intercept), instead of the
    jointly trained w.x_i, W x_i. The penalties of the bias and of the factor part are chosen
    separately, by `text_map_folds`-fold cross-validation over the rated items, on the squared
    error of the held-out items' ratings predicted from the map (users' b_u, p_u fixed); an
    infinite penalty (the intercept alone: no text) is always a candidate, so the map ignores
    text that does not help. Items with ratings keep their learned parameters."""
    text_map_alphas: list[float] = Field(
        default_factory=lambda: [1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0], min_length=1
    )
    """Ridge penalties tried by the text map, relative to the mean eigenvalue of the weighted
    text Gram matrix (scale free); infinity (no text) is always tried too."""
    text_map_folds: int = Field(5, ge=2)
    """Folds over the rated items of the text map's cross-validation."""

    @field_validator("text_map_alphas")
    @classmethod
    def _positive_alphas(cls, v: list[float]) -> list[float]:
        bad = [a for a in v if not a > 0]
        if bad:
            raise ValueError(f"text_map_alphas must all be > 0 (got {bad})")
        return v


def _net(cfg: BiasedMFConfig, n_users: int, n_items: int, text: np.ndarray | None) -> Any:
    import torch

    g = torch.Generator().manual_seed(cfg.seed)
    k = cfg.embedding_size

    def normal(n: int) -> Any:
        return torch.nn.Parameter(torch.randn(n, k, generator=g) * cfg.init_std)

    p: dict[str, Any] = {
        "bu": torch.nn.Parameter(torch.zeros(n_users, 1)),
        "bi": torch.nn.Parameter(torch.zeros(n_items, 1)),
        "p": normal(n_users),
        "q": normal(n_items),
    }
    if getattr(cfg, "implicit", False):
        p["y"] = torch.nn.Parameter(torch.zeros(n_items, k))
    if text is not None:
        d = text.shape[1]
        p["w"] = torch.nn.Parameter(torch.randn(d, k, generator=g) * (cfg.init_std / d**0.5))
        p["wb"] = torch.nn.Parameter(torch.zeros(d))
    return torch.nn.ParameterDict(p)


def _implicit_matrix(rated: sp.csr_matrix) -> tuple[Any, sp.csr_matrix]:
    """(torch sparse |N(u)|^-1/2 indicator of the rated items, the scipy indicator)."""
    import torch

    ind = sp.csr_matrix(rated, dtype=np.float64, copy=True)
    ind.data[:] = 1.0
    n = np.diff(ind.indptr)
    norm = sp.diags(np.where(n > 0, 1.0 / np.sqrt(np.maximum(n, 1)), 0.0)) @ ind
    coo = norm.tocoo()
    t = torch.sparse_coo_tensor(
        np.vstack([coo.row, coo.col]),
        coo.data.astype(np.float32),
        coo.shape,
        check_invariants=False,
    ).coalesce()
    return t, ind.tocsc()


def _step_loss(net: Any, cfg: BiasedMFConfig, batch: dict[str, Any], mu: float) -> Any:
    """0.5 * sum of squared errors + 0.5 * regularisation of the parameters used."""
    import torch
    import torch.nn.functional as F

    u, i, r = batch["u"], batch["i"], batch["r"]
    # Sparse gradients: each step updates only the rows its examples touch.
    pu, qi = F.embedding(u, net["p"], sparse=True), F.embedding(i, net["q"], sparse=True)
    bu = F.embedding(u, net["bu"], sparse=True)[:, 0]
    bi = F.embedding(i, net["bi"], sparse=True)[:, 0]
    reg = cfg.reg * ((pu * pu).sum() + (qi * qi).sum()) + cfg.reg_bias * (
        (bu * bu).sum() + (bi * bi).sum()
    )
    user = pu
    if "y" in net:
        # SVD++ as Surprise trains it: every example moves y_j of all j in N(u) (the implicit
        # sums of every user through one sparse product; y regularised once per example).
        imp = torch.sparse.mm(batch["implicit"], net["y"])[u]
        user = pu + imp
        reg = reg + cfg.reg_implicit * (batch["y_count"] * (net["y"] * net["y"]).sum(1)).sum()
    if "w" in net:
        x = batch["x"]
        keep = batch["keep"]
        qi = qi * keep[:, None] + x @ net["w"]
        bi = bi * keep + x @ net["wb"]
    pred = mu + bu + bi + (user * qi).sum(1)
    err = pred - r
    return 0.5 * (err * err).sum() + 0.5 * reg


def _train(
    cfg: BiasedMFConfig, r: Ratings, rated: sp.csr_matrix, mu: float, text: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Vectorised mini-batch SGD over the ratings; the learned arrays by name."""
    import torch

    n_users, n_items = rated.shape
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads)
    try:
        net = _net(cfg, n_users, n_items, text)
        free = [v for k, v in net.items() if k not in ("w", "wb")]
        opts = [torch.optim.SGD(free, lr=cfg.learning_rate)]
        if "w" in net:
            opts.append(torch.optim.Adam([net["w"], net["wb"]], lr=cfg.text_learning_rate))
        implicit = _implicit_matrix(rated) if "y" in net else None
        x_all = torch.from_numpy(np.asarray(text, np.float32)) if text is not None else None
        rng = np.random.default_rng(cfg.seed)
        drop = getattr(cfg, "text_dropout", 0.0)
        ru, ri = torch.from_numpy(r.user), torch.from_numpy(r.item)
        rv = torch.from_numpy(r.value.astype(np.float32))
        for _ in range(cfg.epochs):
            perm = rng.permutation(len(r))
            for start in range(0, len(perm), cfg.batch_size):
                idx = perm[start : start + cfg.batch_size]
                tidx = torch.from_numpy(idx)
                batch: dict[str, Any] = {"u": ru[tidx], "i": ri[tidx], "r": rv[tidx]}
                if implicit is not None:
                    # y_j is regularised once per example whose user rated j.
                    per_user = np.bincount(r.user[idx], minlength=n_users).astype(np.float64)
                    batch["implicit"] = implicit[0]
                    batch["y_count"] = torch.from_numpy(
                        (implicit[1].T @ per_user).astype(np.float32)
                    )
                if x_all is not None:
                    batch["x"] = x_all[batch["i"]]
                    keep = rng.random(len(idx)) >= drop
                    batch["keep"] = torch.from_numpy(keep.astype(np.float32))
                loss = _step_loss(net, cfg, batch, mu)
                for o in opts:
                    o.zero_grad(set_to_none=True)
                loss.backward()
                for o in opts:
                    o.step()
        out = {k: v.detach().numpy().astype(np.float64) for k, v in net.items()}
        out["bu"], out["bi"] = out["bu"][:, 0], out["bi"][:, 0]
        return out
    finally:
        torch.set_num_threads(old_threads)


def _user_solve(
    cfg: BiasedMFConfig, q: Any, bi: Any, items: Any, values: Any, mu: float
) -> tuple[Any, Any]:
    """(p_u, b_u) minimising one user's squared errors + reg * n |p|^2 + reg_bias * n b^2
    against fixed item parameters (the user's half of an ALS step)."""
    import torch

    x = torch.cat([q[items], torch.ones(len(items), 1, dtype=q.dtype)], dim=1)
    n = float(len(items))
    k = q.shape[1]
    diag = torch.full((k + 1,), cfg.reg * n, dtype=q.dtype)
    diag[k] = cfg.reg_bias * n
    sol = torch.linalg.solve(x.T @ x + torch.diag(diag), x.T @ (values - mu - bi[items]))
    return sol[:k], sol[k]


def _train_dp(cfg: BiasedMFConfig, r: Ratings, n_users: int, n_items: int, mu: float) -> Any:
    """DP-SGD of the item side, least squares of the user side (see `BiasedMFConfig.epsilon`);
    the learned arrays by name, and the DP-SGD run (its budget)."""
    import torch

    from lmrec.privacy import DPSGD

    assert cfg.epsilon is not None
    g = torch.Generator().manual_seed(cfg.seed)
    q = torch.randn(n_items, cfg.embedding_size, generator=g, dtype=torch.float64) * cfg.init_std
    bi = torch.zeros(n_items, dtype=torch.float64)
    p = torch.zeros(n_users, cfg.embedding_size, dtype=torch.float64)
    bu = torch.zeros(n_users, dtype=torch.float64)
    users = np.unique(r.user)  # the units: users with ratings
    order = np.argsort(r.user, kind="stable")
    starts = np.searchsorted(r.user[order], users)
    ends = np.append(starts[1:], len(order))
    ri = torch.from_numpy(r.item.astype(np.int64))
    rv = torch.from_numpy(r.value.astype(np.float64))
    dp = DPSGD(
        cfg.epsilon,
        cfg.delta,
        cfg.max_grad_norm,
        len(users),
        cfg.dp_batch_size,
        cfg.epochs,
        cfg.seed,
        "biasedmf (epsilon)",
    )
    lr = cfg.learning_rate * dp.expected_batch
    while dp.steps < dp.max_steps:
        gq, gb = torch.zeros_like(q), torch.zeros_like(bi)
        for k in dp.draw().tolist():
            idx = torch.from_numpy(order[starts[k] : ends[k]])
            items, values = ri[idx], rv[idx]
            pu, b = _user_solve(cfg, q, bi, items, values, mu)
            p[users[k]], bu[users[k]] = pu, b
            err = mu + b + bi[items] + q[items] @ pu - values
            dq = err[:, None] * pu[None, :] + cfg.reg * q[items]
            db = err + cfg.reg_bias * bi[items]
            factor = dp.clip_factors(torch.sqrt((dq * dq).sum() + (db * db).sum()))
            gq.index_add_(0, items, dq * factor)
            gb.index_add_(0, items, db * factor)
        q -= lr * dp.noisy_mean(gq)
        bi -= lr * dp.noisy_mean(gb)
        dp.step_done()
    for k, u in enumerate(users.tolist()):  # every user against the final item side
        idx = torch.from_numpy(order[starts[k] : ends[k]])
        p[u], bu[u] = _user_solve(cfg, q, bi, ri[idx], rv[idx], mu)
    out = {"p": p.numpy(), "q": q.numpy(), "bu": bu.numpy(), "bi": bi.numpy()}
    return out, dp


def _ridge_paths(
    x: np.ndarray, y: np.ndarray, weight: np.ndarray, alphas: list[float]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Weighted ridge regressions of y (n, m) on x (n, d) with an unpenalised intercept, one
    per penalty alpha (relative to the mean eigenvalue of the weighted centred Gram matrix;
    inf: the intercept alone). Returns (x mean, y mean, coefficients (d, m) per alpha)."""
    s = weight / weight.sum()
    xm, ym = s @ x, s @ y
    root = np.sqrt(weight)[:, None]
    u, sv, vt = np.linalg.svd(root * (x - xm), full_matrices=False)
    proj = u.T @ (root * (y - ym))
    scale = max(float((sv * sv).sum()) / x.shape[1], 1e-12)
    coefs = [
        np.zeros((x.shape[1], y.shape[1]))
        if not np.isfinite(a)
        else vt.T @ ((sv / (sv * sv + a * scale))[:, None] * proj)
        for a in alphas
    ]
    return xm, ym, coefs


def _one_se_choice(item_sse: np.ndarray) -> int:
    """Index of the most penalised candidate (rows in increasing penalty) whose summed error
    exceeds the least one's by at most one standard error of the paired per-item excess (the
    one-standard-error rule of cross-validation, Hastie, Tibshirani & Friedman 2009, 7.10)."""
    best = int(np.argmin(item_sse.sum(1)))
    n = item_sse.shape[1]
    for a in range(item_sse.shape[0] - 1, best, -1):
        excess = item_sse[a] - item_sse[best]
        if excess.sum() <= np.sqrt(n * excess.var(ddof=1)):
            return a
    return best


def text_map_cv(
    text: np.ndarray,
    r: Ratings,
    mu: float,
    bu: np.ndarray,
    user_vec: np.ndarray,
    bi: np.ndarray,
    item_vec: np.ndarray,
    alphas: list[float],
    folds: int,
    scale: tuple[float, float],
    seed: int,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
    """The text -> (item bias, item factor) map of `LMRatingConfig.text_map`.

    Regresses the learned b_i and q_i of the items with ratings on their text vectors
    (weighted ridge, weights = numbers of ratings), one penalty for the bias and one for the
    factors, chosen by `folds`-fold cross-validation over the rated items: the ratings of each
    held-out fold's items are predicted as mu + b_u + b^_i + p_u . q^_i from the map fitted on
    the other folds (clipped to `scale`). The bias penalty is chosen first (factor part without
    text), then the factor penalty; each time the most penalised candidate within one standard
    error of the least squared error (infinity, the intercept without text, is always a
    candidate). Returns the mapped (b^, q^) of every item from the map refitted on all rated
    items and a summary of the choice, or None when fewer than two items have ratings."""
    n_items = text.shape[0]
    counts = np.bincount(r.item, minlength=n_items).astype(np.float64)
    rated = np.flatnonzero(counts > 0)
    if len(rated) < 2:
        return None
    grid = [*sorted(float(a) for a in alphas), float("inf")]
    k = min(folds, len(rated))
    fold_of = np.empty(n_items, np.int64)
    fold_of[rated] = np.random.default_rng(seed).permutation(len(rated)) % k
    target = np.column_stack([bi, item_vec])
    bias = np.zeros((len(grid), len(r)))  # held-out predictions per penalty, per rating
    dot = np.zeros((len(grid), len(r)))
    for f in range(k):
        fit = rated[fold_of[rated] != f]
        rows = np.flatnonzero(fold_of[r.item] == f)
        xm, ym, coefs = _ridge_paths(text[fit], target[fit], counts[fit], grid)
        xi = text[r.item[rows]] - xm
        pu = user_vec[r.user[rows]]
        for a, c in enumerate(coefs):
            bias[a, rows] = ym[0] + xi @ c[:, 0]
            dot[a, rows] = np.einsum("nk,nk->n", pu, ym[1:] + xi @ c[:, 1:])
    base = mu + bu[r.user]

    def item_sse(b: np.ndarray, d: np.ndarray) -> np.ndarray:
        e = np.clip(base + b + d, *scale) - r.value
        return np.bincount(r.item, e * e, minlength=n_items)[rated]

    sse_b = np.stack([item_sse(bias[a], dot[-1]) for a in range(len(grid))])
    a = _one_se_choice(sse_b)
    sse_q = np.stack([item_sse(bias[a], dot[c]) for c in range(len(grid))])
    c = _one_se_choice(sse_q)
    xm, ym, coefs = _ridge_paths(text[rated], target[rated], counts[rated], [grid[a], grid[c]])
    xc = text - xm
    mapped_b = ym[0] + xc @ coefs[0][:, 0]
    mapped_q = ym[1:] + xc @ coefs[1][:, 1:]

    def rmse(x: np.ndarray) -> list[float]:
        return [float(np.sqrt(v / len(r))) for v in x.sum(1)]

    info = {
        # None: the intercept alone (the map ignores the text)
        "alpha_bias": grid[a] if np.isfinite(grid[a]) else None,
        "alpha_factors": grid[c] if np.isfinite(grid[c]) else None,
        "alphas": grid[:-1],
        "cv_rmse_bias": rmse(sse_b),
        "cv_rmse_factors": rmse(sse_q),
        "folds": k,
        "rated_items": len(rated),
    }
    return mapped_b, mapped_q, info


class BiasedMF(FactorRatingModel):
    """r_ui = mu + b_u + b_i + p_u . q_i, by vectorised SGD."""

    name = "biasedmf"
    config_class: type[BiasedMFConfig] = BiasedMFConfig
    config: BiasedMFConfig
    y_: np.ndarray | None = None

    def _text(self, dataset: Dataset) -> np.ndarray | None:
        return None

    def _fit_ratings(self, r: Ratings, dataset: Dataset) -> None:
        self.privacy_: dict[str, Any] | None = None
        if self.config.epsilon is not None:
            self._fit_private(r, dataset)
            return
        text = self._text(dataset)
        joint = text is not None and getattr(self.config, "text_training", True)
        w = _train(self.config, r, self.rated_, self.mu_, text if joint else None)
        n_u = np.bincount(r.user, minlength=dataset.n_users)
        n_i = np.bincount(r.item, minlength=dataset.n_items)
        # Users and items without ratings keep no trace of their random initialisation.
        w["p"][n_u == 0] = 0.0
        w["q"][n_i == 0] = 0.0
        w["bi"][n_i == 0] = 0.0
        self.bu_, self.bi_ = w["bu"], w["bi"]
        self.item_vec_ = w["q"]
        if joint:
            assert text is not None
            self.item_vec_ = w["q"] + text @ w["w"]
            self.bi_ = w["bi"] + text @ w["wb"]
        self.y_ = w.get("y")
        self.user_vec_ = w["p"] + self._implicit(self.rated_)
        if text is not None:
            self._after_text_fit(r, text, n_i)

    def _after_text_fit(self, r: Ratings, text: np.ndarray, counts: np.ndarray) -> None:
        """Called after training with item text (`lmrating`'s text map); nothing here."""

    def _fit_private(self, r: Ratings, dataset: Dataset) -> None:
        """DP-SGD training (`BiasedMFConfig.epsilon`); biasedmf only."""
        from lmrec.errors import LmrecError

        if type(self) is not BiasedMF:
            raise LmrecError(
                f"{self.name}: epsilon (DP-SGD) is supported by biasedmf only (the implicit "
                "and text parts would need their own per-user clipping)"
            )
        w, dp = _train_dp(self.config, r, dataset.n_users, dataset.n_items, self.mu_)
        self.bu_, self.bi_, self.item_vec_, self.y_ = w["bu"], w["bi"], w["q"], None
        self.user_vec_ = w["p"]
        note = "user factors are each user's own (joint DP); mu and the rating scale are not"
        self.privacy_ = dp.privacy(note + " private").as_dict()

    def _implicit(self, rated: sp.csr_matrix) -> np.ndarray:
        """|N(u)|^-1/2 sum_{j in N(u)} y_j per row of `rated` (0 without y)."""
        if self.y_ is None:
            return np.zeros((rated.shape[0], self.item_vec_.shape[1]))
        ind = sp.csr_matrix(rated, copy=True)
        ind.data = np.ones_like(ind.data)
        n = np.asarray(ind.sum(axis=1)).ravel()
        scale = np.where(n > 0, 1.0 / np.sqrt(np.maximum(n, 1)), 0.0)
        return sp.diags(scale) @ (ind @ self.y_)

    def _state(self) -> dict[str, np.ndarray]:
        out = super()._state()
        if self.y_ is not None:
            out["y"] = self.y_
        if getattr(self, "privacy_", None):
            out["privacy"] = np.asarray(json.dumps(self.privacy_))
        return out

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        super()._set_state(state)
        self.y_ = state.get("y")
        self.privacy_ = json.loads(str(state["privacy"])) if "privacy" in state else None


class SVDPP(BiasedMF):
    """SVD++: user factor p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j over the items u rated."""

    name = "svdpp"
    config_class = SVDPPConfig
    config: SVDPPConfig


class LMRating(BiasedMF):
    """R = U.V^T + biases; an item without ratings gets its bias and factor from its text
    vector x_i through the cross-validated ridge map (`text_map`), or through a jointly
    trained projection (v_i + W x_i, c_i + w.x_i) with `text_training`."""

    name = "lmrating"
    config_class = LMRatingConfig
    config: LMRatingConfig

    def _text(self, dataset: Dataset) -> np.ndarray:
        from lmrec.text.cache import item_vectors

        return np.asarray(
            item_vectors(dataset, self.config.encoder, self.config.item_template), np.float64
        )

    text_map_: dict[str, Any] | None = None

    def _after_text_fit(self, r: Ratings, text: np.ndarray, counts: np.ndarray) -> None:
        """Cold items' b_i, q_i from the cross-validated text map (`LMRatingConfig.text_map`);
        its choice in `text_map_` (None when off or with fewer than two rated items)."""
        self.text_map_ = None
        c = self.config
        if not c.text_map:
            return
        got = text_map_cv(
            text,
            r,
            self.mu_,
            self.bu_,
            self.user_vec_,
            self.bi_,
            self.item_vec_,
            c.text_map_alphas,
            c.text_map_folds,
            self.scale_,
            c.seed,
        )
        if got is None:
            return
        mapped_b, mapped_q, self.text_map_ = got
        cold = counts == 0
        self.text_map_["cold_items"] = int(cold.sum())
        self.bi_ = np.where(cold, mapped_b, self.bi_)
        self.item_vec_ = np.where(cold[:, None], mapped_q, self.item_vec_)

    def _state(self) -> dict[str, np.ndarray]:
        out = super()._state()
        if self.text_map_ is not None:
            out["text_map"] = np.asarray(json.dumps(self.text_map_))
        return out

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        super()._set_state(state)
        self.text_map_ = json.loads(str(state["text_map"])) if "text_map" in state else None
