"""Contrastive fine-tuning of a text encoder on the platform's own interactions.

Training pairs (`pairs`):
- "history": the user's recent history -> the next item (behaviour text for the transformer
  modes; the history items' vectors under the kernel score of `lmcontent` for "head").
- "item": item text -> text of the next item in the same user's sequence (co-interacted
  consecutive items), deduplicated as unordered pairs, with a symmetric loss.

Modes (`mode`), each saved as a new encoder version directory that `load_encoder(DIR)` reads:
- "head": a residual projection f(x) = norm(x + x W + b) on frozen encoder vectors.
- "full": every weight of the sentence-transformers model.
- "top": the last `layers` transformer layers (and the pooler and any modules after the
  transformer) trainable, the rest frozen: bit-identical to the base.
- "lora": low-rank adapters W + (alpha / r) B A on the attention query/key/value projections
  (Hu et al. 2021), merged into the weights before saving: a plain sentence-transformers model.
The transformer modes use in-batch negatives (the loss of Henderson et al. 2017,
"MultipleNegatives"), with duplicates of the positive item masked, on CPU or CUDA (mixed
precision there). A version's name (its cache key) is a hash of all of its weights, so its
vectors never mix with the base encoder's or another version's.
"""

from __future__ import annotations

__all__ = [
    "MODES",
    "PAIRS",
    "FinetuneConfig",
    "FinetuneResult",
    "finetune",
    "item_pairs",
    "lora_linear",
    "next_item_pairs",
]

import copy
import hashlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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
    import torch

    from lmrec.data import Dataset
    from lmrec.store import Store

MODES = ("head", "full", "top", "lora")
PAIRS = ("history", "item")
#: Defaults that depend on the mode: (batch size, learning rate).
_DEFAULTS = {"head": (256, 1e-3), "full": (32, 2e-5), "top": (32, 1e-4), "lora": (32, 5e-4)}
#: Gradient steps of the transformer modes when `steps` is not given.
DEFAULT_STEPS = 50


@dataclass(frozen=True)
class FinetuneConfig:
    """Every option of one fine-tuning run (validated on creation; saved in the version).

    `batch_size` and `learning_rate` default by mode (head 256 / 1e-3, full 32 / 2e-5, top 32 /
    1e-4, lora 32 / 5e-4); `steps` caps the gradient steps (default 50 for the transformer
    modes, all `epochs` for "head"); `max_seconds` stops the transformer modes earlier, after
    the step that reaches it (the steps done are recorded); `temperature` defaults to 0.02 for
    "head", 0.05 else.
    """

    encoder: str = "minilm"
    mode: Literal["head", "full", "top", "lora"] = "head"
    pairs: Literal["history", "item"] = "history"
    negatives: Literal["in_batch", "all"] = "in_batch"  # "all": head mode only
    epochs: int = 3
    steps: int | None = None
    max_seconds: float | None = None  # transformer modes: stop after the step that passes it
    batch_size: int | None = None
    learning_rate: float | None = None
    weight_decay: float = 0.0
    temperature: float | None = None
    max_history: int = 20
    half_life: float = 1.0
    layers: int = 2  # mode "top": transformer layers trained
    lora_rank: int = 8
    lora_alpha: float = 16.0
    device: str = "auto"  # "cpu", "cuda", "cuda:N" or "auto" (cuda if available); head: cpu
    mixed_precision: bool = True  # on CUDA: bfloat16 autocast (float16 + loss scaling if no bf16)
    item_template: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise LmrecError(f"finetune: mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.pairs not in PAIRS:
            raise LmrecError(f"finetune: pairs must be 'history' or 'item', not {self.pairs!r}")
        if self.negatives not in ("in_batch", "all"):
            raise LmrecError(
                f"finetune: negatives must be 'in_batch' or 'all', not {self.negatives!r}"
            )
        if self.negatives == "all" and self.mode != "head":
            raise LmrecError("finetune: negatives='all' works in mode 'head' only")
        ints = [("epochs", self.epochs), ("max_history", self.max_history)]
        ints += [("layers", self.layers), ("lora_rank", self.lora_rank)]
        ints += [("steps", self.steps), ("batch_size", self.batch_size)]
        for name, v in ints:
            if v is not None and (not isinstance(v, int) or v < 1):
                raise LmrecError(f"finetune: {name} must be an integer of at least 1, got {v!r}")
        if self.batch_size == 1 and self.mode != "head":
            raise LmrecError("finetune: in-batch negatives need a batch_size of at least 2")
        for name, v in (
            ("learning_rate", self.learning_rate),
            ("temperature", self.temperature),
            ("lora_alpha", self.lora_alpha),
            ("half_life", self.half_life),
            ("max_seconds", self.max_seconds),
        ):
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise LmrecError(f"finetune: {name} must be a positive number, got {v!r}")
        if self.weight_decay < 0:
            raise LmrecError(f"finetune: weight_decay must be >= 0, got {self.weight_decay!r}")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise LmrecError(
                f"finetune: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', not {dev!r}"
            )

    @property
    def resolved_batch_size(self) -> int:
        return self.batch_size or _DEFAULTS[self.mode][0]

    @property
    def resolved_learning_rate(self) -> float:
        return self.learning_rate or _DEFAULTS[self.mode][1]

    @property
    def resolved_temperature(self) -> float:
        return self.temperature or (0.02 if self.mode == "head" else 0.05)

    def resolved_device(self) -> str:
        """The torch device to train on; an LmrecError if CUDA is asked for but missing."""
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise LmrecError(
                f"finetune: device {self.device!r} asked for, but CUDA is not available"
            )
        return self.device


@dataclass
class FinetuneResult:
    """Where the new encoder version is, its name (cache key) and its training record:
    `losses` per epoch for "head", per step otherwise."""

    path: Path
    name: str
    mode: str
    pairs: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    device: str = "cpu"


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


def item_pairs(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) item indices of consecutive interactions of the same user, a != b, each unordered
    pair once (a < b), in a fixed order."""
    it = np.asarray(dataset.item, np.int64)
    same_user = np.diff(np.asarray(dataset.user, np.int64)) == 0  # (N-1,) sorted by user, time
    a, b = it[:-1][same_user], it[1:][same_user]
    keep = a != b
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    pairs = np.unique(np.stack([lo, hi], axis=1), axis=0) if len(lo) else np.zeros((0, 2), int)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


def _write_version(out: Path, meta: dict, write: Callable[[Path], None]) -> None:
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
    mode: Literal["head", "full", "top", "lora"] = "head",
    pairs: Literal["history", "item"] = "history",
    negatives: Literal["in_batch", "all"] = "in_batch",
    epochs: int = 3,
    steps: int | None = None,
    max_seconds: float | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    weight_decay: float = 0.0,
    temperature: float | None = None,
    max_history: int = 20,
    half_life: float = 1.0,
    layers: int = 2,
    lora_rank: int = 8,
    lora_alpha: float = 16.0,
    device: str = "auto",
    mixed_precision: bool = True,
    item_template: str | None = None,
    seed: int = 0,
    config: FinetuneConfig | None = None,
    store: Store | None = None,
    progress: bool = False,
) -> FinetuneResult:
    """Fine-tune `encoder` on `dataset`'s sequences and save it as a version under `out`.

    The options are those of `FinetuneConfig` (or pass `config`, which then wins). Train on
    the training part of a split only, so that evaluation stays fair.
    """
    if config is None:
        config = FinetuneConfig(
            encoder=encoder, mode=mode, pairs=pairs, negatives=negatives, epochs=epochs,
            steps=steps, max_seconds=max_seconds, batch_size=batch_size,
            learning_rate=learning_rate,
            weight_decay=weight_decay, temperature=temperature, max_history=max_history,
            half_life=half_life, layers=layers, lora_rank=lora_rank, lora_alpha=lora_alpha,
            device=device, mixed_precision=mixed_precision, item_template=item_template,
            seed=seed,
        )  # fmt: skip
    cfg = config
    if dataset.n_interactions == 0:
        raise LmrecError("finetune: the dataset has no interactions")
    base = load_encoder(cfg.encoder)
    if isinstance(base, ProjectedEncoder):
        raise LmrecError(
            f"finetune: {cfg.encoder!r} already has a head; start from its base encoder"
        )
    if isinstance(base, TfidfEncoder):
        raise LmrecError(
            "finetune: a TF-IDF encoder is fitted per corpus and cannot be fine-tuned; "
            "use 'minilm' or a sentence-transformers model"
        )
    spec = cfg.encoder
    if Path(spec).expanduser().is_dir():  # the version must find its base from any cwd
        spec = str(Path(spec).expanduser().resolve())
    if cfg.mode != "head" and not isinstance(base, SentenceTransformerEncoder):
        raise LmrecError(f"finetune: mode {cfg.mode!r} needs a sentence-transformers encoder")
    texts = item_texts(dataset, template=cfg.item_template)
    t0 = time.perf_counter()
    if cfg.pairs == "item":
        a, b = item_pairs(dataset)
        if len(a) == 0:
            raise LmrecError("finetune: no user has two different consecutive items to learn from")
        users = pos = None
    else:
        users, pos, b = next_item_pairs(dataset, max_history=cfg.max_history)
        if len(b) == 0:
            raise LmrecError("finetune: no user has two or more interactions to learn from")
        a = None
    if cfg.mode == "head":
        return _finetune_head(dataset, Path(out), base, texts, spec, cfg, users, pos, a, b,
                              store, t0, progress)  # fmt: skip
    assert isinstance(base, SentenceTransformerEncoder)
    return _finetune_model(dataset, Path(out), base, texts, cfg, users, pos, a, b, t0, progress)


def _finetune_head(
    dataset, out, base, texts, spec, cfg, users, pos, a, targets, store, t0, progress,
) -> FinetuneResult:  # fmt: skip
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    x = torch.from_numpy(encode_cached(base, texts, store, progress=progress))  # (n, d)
    _n, d = x.shape
    weight = torch.zeros(d, d, requires_grad=True)
    bias = torch.zeros(d, requires_grad=True)
    lr, batch_size, temperature = (
        cfg.resolved_learning_rate,
        cfg.resolved_batch_size,
        cfg.resolved_temperature,
    )
    opt = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=cfg.weight_decay)
    if a is not None:  # item pairs, both directions: the "history" is the one other item
        hist = np.concatenate([a, targets])[:, None]  # (P, 1)
        targets = np.concatenate([targets, a])
        logw = np.zeros(hist.shape, np.float32)
    else:  # the L items before each pair, padded; recency log-weights
        offs = np.arange(cfg.max_history, 0, -1)  # steps back: L..1
        hist_pos = pos[:, None] - offs[None, :]  # (P, L)
        user_lo = dataset.user_ptr[users][:, None]
        valid = hist_pos >= user_lo
        hist = np.where(valid, dataset.item[np.clip(hist_pos, 0, None)], 0)
        logw = np.where(valid, -(offs[None, :] - 1) / cfg.half_life * math.log(2), -np.inf)
    hist_t = torch.from_numpy(hist.astype(np.int64))
    logw_t = torch.from_numpy(logw.astype(np.float32))
    tgt_t = torch.from_numpy(targets)
    n_batches = math.ceil(len(targets) / batch_size)
    total_steps = (
        cfg.epochs * n_batches if cfg.steps is None else min(cfg.steps, cfg.epochs * n_batches)
    )
    losses: list[float] = []
    step_losses: list[float] = []
    bar = tqdm(total=total_steps, desc="fine-tuning head", disable=not progress)
    for _ in range(cfg.epochs):
        order = torch.from_numpy(rng.permutation(len(targets)))
        total, count = 0.0, 0
        for s in range(0, len(order), batch_size):
            if len(step_losses) >= total_steps:
                break
            bt = order[s : s + batch_size]
            f = torch.nn.functional.normalize(x + x @ weight + bias, dim=-1)  # (n, d)
            h = f[hist_t[bt]]  # (B, L, d)
            if cfg.negatives == "all":
                cand, label = f, tgt_t[bt]
            else:
                cand, label = f[tgt_t[bt]], torch.arange(len(bt))
            sims = torch.einsum("bld,cd->blc", h, cand) / temperature  # (B, L, C)
            logits = torch.logsumexp(sims + logw_t[bt][:, :, None], dim=1)  # (B, C)
            if cfg.negatives == "in_batch":  # the same item twice in a batch is no negative
                same = tgt_t[bt][:, None] == tgt_t[bt][None, :]
                logits = logits.masked_fill(same & ~torch.eye(len(bt), dtype=torch.bool), -1e9)
            loss = torch.nn.functional.cross_entropy(logits, label)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(bt)
            count += len(bt)
            step_losses.append(loss.item())
            bar.update(1)
        if count:
            losses.append(total / count)
    bar.close()
    w = weight.detach().numpy().astype(np.float32)
    bb = bias.detach().numpy().astype(np.float32)
    enc = ProjectedEncoder(base, w, bb)
    seconds = time.perf_counter() - t0
    meta = {
        "kind": "head",
        "name": enc.name,
        "base": spec,
        "base_name": base.name,
        "dim": int(d),
        "trained_on": dataset.name,
        "pairs": len(targets),
        "negatives": cfg.negatives,
        "temperature": temperature,
        "losses": losses,
        "config": _config_record(cfg),
        "training": {"steps": len(step_losses), "step_losses": step_losses,
                     "seconds": round(seconds, 2), "device": "cpu"},
    }  # fmt: skip
    _write_version(out, meta, lambda p: np.savez(p / "head.npz", weight=w, bias=bb))
    return FinetuneResult(out, enc.name, "head", len(targets), losses, seconds,
                          len(step_losses), "cpu")  # fmt: skip


def _config_record(cfg: FinetuneConfig) -> dict[str, Any]:
    rec = asdict(cfg)
    rec.update(
        batch_size=cfg.resolved_batch_size,
        learning_rate=cfg.resolved_learning_rate,
        temperature=cfg.resolved_temperature,
    )
    return rec


# -- the transformer modes ------------------------------------------------------------------


def _lora_class() -> type:
    import torch

    class _LoRALinear(torch.nn.Module):
        """y = base(x) + (alpha / r) x A^T B^T; A (r, in) small random, B (out, r) zero."""

        def __init__(self, base: torch.nn.Linear, rank: int, alpha: float):
            super().__init__()
            self.base = base
            self.scale = alpha / rank
            self.lora_a = torch.nn.Parameter(
                torch.empty(rank, base.in_features, device=base.weight.device)
            )
            self.lora_b = torch.nn.Parameter(
                torch.zeros(base.out_features, rank, device=base.weight.device)
            )
            torch.nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

        def merged(self) -> torch.nn.Linear:
            """The base layer with the adapter added into its weight."""
            with torch.no_grad():
                delta = (self.lora_b.float() @ self.lora_a.float()) * self.scale
                self.base.weight += delta.to(self.base.weight.dtype)
            return self.base

    return _LoRALinear


def lora_linear(base: Any, rank: int = 8, alpha: float = 16.0) -> Any:
    """A LoRA adapter around a `torch.nn.Linear` (Hu et al. 2021); `.merged()` folds it in."""
    return _lora_class()(base, rank, alpha)


#: Names (last component) of attention projections that LoRA adapts: BERT/MiniLM, MPNet, others.
_ATTENTION = {"query", "key", "value", "q", "k", "v", "q_proj", "k_proj", "v_proj"}


def _layers_of(auto_model: Any) -> Any:
    """The ModuleList of transformer layers of a Hugging Face encoder model."""
    for path in ("encoder.layer", "layers", "transformer.layer", "encoder.layers"):
        obj = auto_model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None and hasattr(obj, "__len__"):
            return obj
    raise LmrecError(
        f"finetune: cannot find the transformer layers of {type(auto_model).__name__}; "
        "use mode 'full' or 'lora'"
    )


def _prepare(model: Any, cfg: FinetuneConfig) -> list[tuple[Any, str, Any]]:
    """Set which parameters train for the mode; returns the LoRA wrappers put in place
    (parent module, attribute, wrapper) so they can be merged back."""
    import torch

    wrapped: list[tuple[Any, str, Any]] = []
    if cfg.mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return wrapped
    for p in model.parameters():
        p.requires_grad_(False)
    auto = model[0].auto_model
    if cfg.mode == "top":
        layers = _layers_of(auto)
        if cfg.layers > len(layers):
            raise LmrecError(
                f"finetune: layers={cfg.layers} but the encoder has only {len(layers)} layers"
            )
        for layer in list(layers)[len(layers) - cfg.layers :]:
            for p in layer.parameters():
                p.requires_grad_(True)
        pooler = getattr(auto, "pooler", None)
        for mod in [pooler, *list(model)[1:]]:
            if mod is not None:
                for p in mod.parameters():
                    p.requires_grad_(True)
        return wrapped
    cls = _lora_class()
    for name, mod in list(auto.named_modules()):
        if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in _ATTENTION:
            parent = auto.get_submodule(name.rsplit(".", 1)[0]) if "." in name else auto
            attr = name.rsplit(".", 1)[-1]
            lora = cls(mod, cfg.lora_rank, cfg.lora_alpha)
            setattr(parent, attr, lora)
            wrapped.append((parent, attr, lora))
    if not wrapped:
        raise LmrecError(
            f"finetune: no attention projections ({', '.join(sorted(_ATTENTION))}) found in "
            f"{type(auto).__name__} for LoRA; use mode 'top' or 'full'"
        )
    return wrapped


def _weights_hash(model: Any) -> str:
    """sha256 (12 hex digits) of every tensor of the model's state, by name."""
    import torch

    h = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def _embed(model: Any, texts: list[str], device: str) -> torch.Tensor:
    import torch

    prep = getattr(model, "preprocess", None) or model.tokenize  # tokenize: before ST 5
    feats = prep(texts)
    feats = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in feats.items()}
    return torch.nn.functional.normalize(model(feats)["sentence_embedding"].float(), dim=-1)


def _contrastive(
    q: torch.Tensor, k: torch.Tensor, q_ids: torch.Tensor, k_ids: torch.Tensor, temperature: float,
    symmetric: bool,
) -> torch.Tensor:  # fmt: skip
    """In-batch InfoNCE: query i should pick key i among all keys of the batch. A key of the
    same item as the positive, or of the query's own item, is no negative (masked)."""
    import torch

    eye = torch.eye(len(q), dtype=torch.bool, device=q.device)
    labels = torch.arange(len(q), device=q.device)
    logits = q @ k.T / temperature  # (B, B)
    mask = ((k_ids[None, :] == k_ids[:, None]) | (k_ids[None, :] == q_ids[:, None])) & ~eye
    loss = torch.nn.functional.cross_entropy(logits.masked_fill(mask, -1e4), labels)
    if symmetric:
        mask_t = ((q_ids[None, :] == q_ids[:, None]) | (q_ids[None, :] == k_ids[:, None])) & ~eye
        loss_t = torch.nn.functional.cross_entropy(logits.T.masked_fill(mask_t, -1e4), labels)
        loss = (loss + loss_t) / 2
    return loss


def _finetune_model(
    dataset, out, base, texts, cfg, users, pos, a, targets, t0, progress,
) -> FinetuneResult:  # fmt: skip
    import torch
    from tqdm.auto import tqdm

    device = cfg.resolved_device()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = copy.deepcopy(base.model).to(device)  # the shared, loaded base model stays as it was
    wrapped = _prepare(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    n_total = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    opt = torch.optim.AdamW(params, lr=cfg.resolved_learning_rate, weight_decay=cfg.weight_decay)
    use_amp = device.startswith("cuda") and cfg.mixed_precision
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    temperature, batch_size = cfg.resolved_temperature, cfg.resolved_batch_size

    if a is None:
        titles = dataset.item_features.title
        ids = dataset.items.ids.tolist()
        names = [t or ids[i] for i, t in enumerate(titles)]
        vals = dataset.value[~np.isnan(dataset.value)]
        top = float(vals.max()) if len(vals) else None

        def query(j: int) -> str:
            p, u = int(pos[j]), int(users[j])
            lo = max(int(dataset.user_ptr[u]), p - cfg.max_history)
            return behaviour_text(
                [names[i] for i in dataset.item[lo:p]],
                [dataset.event_names[e] for e in dataset.event[lo:p]],
                dataset.value[lo:p].tolist(),
                max_items=cfg.max_history,
                max_value=top,
            )

    n_pairs = len(targets)
    per_epoch = math.ceil(n_pairs / batch_size)
    total_steps = min(cfg.steps or DEFAULT_STEPS, cfg.epochs * per_epoch)
    losses: list[float] = []
    model.train()
    train_t0 = time.perf_counter()
    try:
        bar = tqdm(total=total_steps, desc=f"fine-tuning encoder ({cfg.mode})",
                   disable=not progress)  # fmt: skip
        while len(losses) < total_steps:
            order = rng.permutation(n_pairs)
            for s in range(0, n_pairs, batch_size):
                if len(losses) >= total_steps:
                    break
                bt = order[s : s + batch_size]
                if len(bt) < 2:
                    continue
                k_ids = torch.from_numpy(targets[bt]).to(device)
                if a is None:
                    q_txt = [query(int(j)) for j in bt]
                    q_ids = -1 - torch.arange(len(bt), device=device)  # never an item
                else:
                    q_txt = [texts[int(i)] for i in a[bt]]
                    q_ids = torch.from_numpy(a[bt]).to(device)
                k_txt = [texts[int(i)] for i in targets[bt]]
                with torch.autocast(
                    device_type=device.split(":")[0], dtype=amp_dtype, enabled=use_amp
                ):
                    q = _embed(model, q_txt, device)
                    k = _embed(model, k_txt, device)
                    loss = _contrastive(q, k, q_ids, k_ids, temperature, symmetric=a is not None)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                losses.append(float(loss.item()))
                bar.update(1)
                if (
                    cfg.max_seconds is not None
                    and time.perf_counter() - train_t0 >= cfg.max_seconds
                ):
                    total_steps = len(losses)  # the time budget is spent
        bar.close()
    finally:
        model.eval()
    train_s = time.perf_counter() - train_t0
    for parent, attr, lora in wrapped:
        setattr(parent, attr, lora.merged())
    model.to("cpu")
    suffix = {"full": "ft", "top": f"ft-top{cfg.layers}", "lora": f"ft-lora{cfg.lora_rank}"}
    name = f"{base.name}+{suffix[cfg.mode]}@{_weights_hash(model)}"
    seconds = time.perf_counter() - t0
    meta = {
        "kind": "sentence-transformers",
        "path": "model",
        "name": name,
        "base": base.name,
        "mode": cfg.mode,
        "pair_kind": cfg.pairs,
        "pairs": int(n_pairs),
        "steps": len(losses),
        "stopped_by_time": cfg.max_seconds is not None and train_s >= cfg.max_seconds,
        "trained_on": dataset.name,
        "losses": losses,
        "config": _config_record(cfg),
        "training": {
            "device": device,
            "mixed_precision": str(amp_dtype).removeprefix("torch.") if use_amp else None,
            "torch_threads": torch.get_num_threads(),
            "trainable_parameters": int(n_trainable),
            "parameters": int(n_total),
            "seconds": round(seconds, 2),
            "train_seconds": round(train_s, 2),
            "seconds_per_step": round(train_s / max(len(losses), 1), 4),
        },
    }
    _write_version(out, meta, lambda p: model.save(str(p / "model")))
    return FinetuneResult(out, name, cfg.mode, int(n_pairs), losses, seconds, len(losses), device)
