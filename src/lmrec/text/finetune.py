"""Contrastive fine-tuning of a text encoder on the platform's own interactions.

Two modes, each saved as a new encoder version directory that `load_encoder(DIR)` reads:
- "head": a residual projection f(x) = norm(x + x W + b) on top of frozen encoder vectors,
  trained so that the recent history scores the next item above in-batch (or all) negatives
  under the kernel score of `lmcontent`: log sum_j w_j exp(cos(f(x_j), f(x_next)) / T).
- "full": the sentence-transformers model itself, a few steps of in-batch-negative training
  (behaviour text -> next item text; the loss of Henderson et al. 2017, "MultipleNegatives").
"""

from __future__ import annotations

__all__ = ["FinetuneResult", "finetune", "next_item_pairs"]

import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from lmrec.errors import LmrecError
from lmrec.text.cache import encode_cached
from lmrec.text.encoders import (
    ENCODER_FILE,
    ENCODER_FORMAT,
    ProjectedEncoder,
    SentenceTransformerEncoder,
    TfidfEncoder,
    load_encoder,
)
from lmrec.text.templates import behaviour_text, item_texts

if TYPE_CHECKING:
    from lmrec.data import Dataset
    from lmrec.store import Store


@dataclass
class FinetuneResult:
    """Where the new encoder version is, its name (cache key) and the mean loss per epoch."""

    path: Path
    name: str
    mode: str
    pairs: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def next_item_pairs(
    dataset: Dataset, *, max_history: int = 20, min_history: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, position, target item) for every interaction with at least `min_history`
    earlier ones of the same user; the history is the `max_history` items before it."""
    users, pos, targets = [], [], []
    ptr = dataset.user_ptr
    for u in range(dataset.n_users):
        lo, hi = int(ptr[u]), int(ptr[u + 1])
        for t in range(lo + min_history, hi):
            users.append(u)
            pos.append(t)
            targets.append(int(dataset.item[t]))
    return (np.asarray(users, np.int64), np.asarray(pos, np.int64), np.asarray(targets, np.int64))


def _write_version(out: Path, meta: dict, write: callable) -> None:  # type: ignore[valid-type]
    """Write into a temporary sibling, then move into place: nothing half-written remains."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        write(tmp)
        (tmp / ENCODER_FILE).write_text(
            json.dumps({"format": ENCODER_FORMAT, "version": 1, **meta}, indent=2)
        )
        if out.exists():
            if not (out / ENCODER_FILE).exists() and any(out.iterdir()):
                raise LmrecError(
                    f"{out} exists and is not an lmrec encoder directory; not replaced"
                )
            shutil.rmtree(out)
        tmp.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def finetune(
    dataset: Dataset,
    out: str | Path,
    *,
    encoder: str = "minilm",
    mode: Literal["head", "full"] = "head",
    negatives: Literal["in_batch", "all"] = "in_batch",
    epochs: int = 3,
    steps: int | None = None,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    temperature: float = 0.02,
    max_history: int = 20,
    half_life: float = 1.0,
    item_template: str | None = None,
    seed: int = 0,
    store: Store | None = None,
    progress: bool = False,
) -> FinetuneResult:
    """Fine-tune `encoder` on next-item prediction over `dataset` and save it under `out`.

    Train on the training part of a split only, so that evaluation stays fair. `steps` caps
    the number of gradient steps (the default for "full" is 50).
    """
    if dataset.n_interactions == 0:
        raise LmrecError("finetune: the dataset has no interactions")
    if mode not in ("head", "full"):
        raise LmrecError(f"finetune: mode must be 'head' or 'full', not {mode!r}")
    if negatives not in ("in_batch", "all"):
        raise LmrecError(f"finetune: negatives must be 'in_batch' or 'all', not {negatives!r}")
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("max_history", max_history)):
        if v < 1:
            raise LmrecError(f"finetune: {name} must be at least 1, got {v}")
    base = load_encoder(encoder)
    if isinstance(base, ProjectedEncoder):
        raise LmrecError(f"finetune: {encoder!r} already has a head; start from its base encoder")
    if isinstance(base, TfidfEncoder):
        raise LmrecError(
            "finetune: a TF-IDF encoder is fitted per corpus and cannot be fine-tuned; "
            "use 'minilm' or a sentence-transformers model"
        )
    if Path(encoder).expanduser().is_dir():  # the version must find its base from any cwd
        encoder = str(Path(encoder).expanduser().resolve())
    if not hasattr(base, "model") and mode == "full":
        raise LmrecError("finetune: mode 'full' needs a sentence-transformers encoder")
    users, pos, targets = next_item_pairs(dataset, max_history=max_history)
    if len(targets) == 0:
        raise LmrecError("finetune: no user has two or more interactions to learn from")
    texts = item_texts(dataset, template=item_template)
    t0 = time.perf_counter()
    if mode == "head":
        return _finetune_head(
            dataset, Path(out), base, texts, encoder, users, pos, targets, store, t0,
            negatives=negatives, epochs=epochs, steps=steps, batch_size=batch_size,
            learning_rate=learning_rate, weight_decay=weight_decay, temperature=temperature,
            max_history=max_history, half_life=half_life, seed=seed, progress=progress,
        )  # fmt: skip
    assert isinstance(base, SentenceTransformerEncoder)
    return _finetune_full(
        dataset, Path(out), base, texts, users, pos, targets, t0,
        steps=steps or 50, batch_size=min(batch_size, 32), learning_rate=min(learning_rate, 5e-5),
        temperature=max(temperature, 0.05), max_history=max_history, seed=seed, progress=progress,
    )  # fmt: skip


def _finetune_head(
    dataset, out, base, texts, spec, users, pos, targets, store, t0, *, negatives, epochs, steps,
    batch_size, learning_rate, weight_decay, temperature, max_history, half_life, seed, progress,
) -> FinetuneResult:  # fmt: skip
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(encode_cached(base, texts, store, progress=progress))  # (n, d)
    _n, d = x.shape
    weight = torch.zeros(d, d, requires_grad=True)
    bias = torch.zeros(d, requires_grad=True)
    opt = torch.optim.AdamW([weight, bias], lr=learning_rate, weight_decay=weight_decay)
    # History of each pair: the L items before it, padded with -1; recency log-weights.
    offs = np.arange(max_history, 0, -1)  # steps back: L..1
    hist_pos = pos[:, None] - offs[None, :]  # (P, L)
    user_lo = dataset.user_ptr[users][:, None]
    valid = hist_pos >= user_lo
    hist = np.where(valid, dataset.item[np.clip(hist_pos, 0, None)], 0)
    logw = np.where(valid, -(offs[None, :] - 1) / half_life * math.log(2), -np.inf)
    hist_t, logw_t = (
        torch.from_numpy(hist.astype(np.int64)),
        torch.from_numpy(logw.astype(np.float32)),
    )
    tgt_t = torch.from_numpy(targets)
    n_batches = math.ceil(len(targets) / batch_size)
    total_steps = epochs * n_batches if steps is None else min(steps, epochs * n_batches)
    losses: list[float] = []
    done = 0
    bar = tqdm(total=total_steps, desc="fine-tuning head", disable=not progress)
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(targets)))
        total, count = 0.0, 0
        for s in range(0, len(order), batch_size):
            if done >= total_steps:
                break
            b = order[s : s + batch_size]
            f = torch.nn.functional.normalize(x + x @ weight + bias, dim=-1)  # (n, d)
            h = f[hist_t[b]]  # (B, L, d)
            if negatives == "all":
                cand, label = f, tgt_t[b]
            else:
                cand, label = f[tgt_t[b]], torch.arange(len(b))
            sims = torch.einsum("bld,cd->blc", h, cand) / temperature  # (B, L, C)
            logits = torch.logsumexp(sims + logw_t[b][:, :, None], dim=1)  # (B, C)
            if negatives == "in_batch":  # the same item twice in a batch is no negative
                same = tgt_t[b][:, None] == tgt_t[b][None, :]
                logits = logits.masked_fill(same & ~torch.eye(len(b), dtype=torch.bool), -1e9)
            loss = torch.nn.functional.cross_entropy(logits, label)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
            count += len(b)
            done += 1
            bar.update(1)
        if count:
            losses.append(total / count)
    bar.close()
    w = weight.detach().numpy().astype(np.float32)
    bb = bias.detach().numpy().astype(np.float32)
    enc = ProjectedEncoder(base, w, bb)
    meta = {
        "kind": "head",
        "name": enc.name,
        "base": spec,
        "base_name": base.name,
        "dim": int(d),
        "trained_on": dataset.name,
        "pairs": len(targets),
        "negatives": negatives,
        "temperature": temperature,
        "losses": losses,
    }
    _write_version(out, meta, lambda p: np.savez(p / "head.npz", weight=w, bias=bb))
    return FinetuneResult(out, enc.name, "head", len(targets), losses, time.perf_counter() - t0)


def _finetune_full(
    dataset, out, base, texts, users, pos, targets, t0, *, steps, batch_size, learning_rate,
    temperature, max_history, seed, progress,
) -> FinetuneResult:  # fmt: skip
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    import copy

    model = copy.deepcopy(base.model)  # the shared, loaded base model stays as it was
    titles = dataset.item_features.title
    ids = dataset.items.ids.tolist()
    names = [t or ids[i] for i, t in enumerate(titles)]
    vals = dataset.value[~np.isnan(dataset.value)]
    top = float(vals.max()) if len(vals) else None

    def query(p: int, u: int) -> str:
        lo = max(int(dataset.user_ptr[u]), p - max_history)
        return behaviour_text(
            [names[i] for i in dataset.item[lo:p]],
            [dataset.event_names[e] for e in dataset.event[lo:p]],
            dataset.value[lo:p].tolist(),
            max_items=max_history,
            max_value=top,
        )

    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    losses: list[float] = []
    try:
        for _ in tqdm(range(steps), desc="fine-tuning encoder", disable=not progress):
            b = rng.choice(len(targets), size=min(batch_size, len(targets)), replace=False)
            b = b[np.unique(targets[b], return_index=True)[1]]  # one pair per target item
            q = [query(int(pos[j]), int(users[j])) for j in b]
            k = [texts[int(targets[j])] for j in b]
            emb = []
            for side in (q, k):
                feats = model.tokenize(side)
                feats = {
                    key: v.to(model.device) if isinstance(v, torch.Tensor) else v
                    for key, v in feats.items()
                }
                emb.append(
                    torch.nn.functional.normalize(model(feats)["sentence_embedding"], dim=-1)
                )
            logits = emb[0] @ emb[1].T / temperature
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(b)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        model.eval()

    def write(p: Path) -> None:
        model.save(str(p / "model"))

    tmp_name = f"{base.name}+ft"
    meta = {"kind": "sentence-transformers", "path": "model", "base": base.name, "steps": steps,
            "trained_on": dataset.name, "losses": losses}  # fmt: skip
    _write_version(out, {**meta, "name": tmp_name}, write)
    # The version's name (its cache key) is the fingerprint of the saved weights.
    from lmrec.text.encoders import _fingerprint

    name = f"{base.name}+ft@{_fingerprint(out / 'model')}"
    meta_file = out / ENCODER_FILE
    data = json.loads(meta_file.read_text())
    data["name"] = name
    meta_file.write_text(json.dumps(data, indent=2))
    return FinetuneResult(out, name, "full", len(targets), losses, time.perf_counter() - t0)
