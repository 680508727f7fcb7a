"""A smaller, faster student of a sentence encoder, distilled on the catalogue's own texts.

The student is the teacher with only some of its Transformer layers (`layers`, e.g. 0, 2 and
4 of all-MiniLM-L6-v2's six), each initialised from the teacher's layer of that index, the
embeddings and the pooling the teacher's. It is trained to give each text the teacher's unit
sentence vector (loss 1 - cosine, mean over a batch) on the item texts of the dataset
(`lmrec.text.templates.item_texts`) and any extra texts given, and saved as an encoder version
(a sentence-transformers model plus lmrec_encoder.json) that `load_encoder(DIR)` runs with
torch and `load_encoder("onnx-int8:DIR")` with ONNX Runtime. Its name (the cache key) is the
teacher's name + "+distil-L<n>@" + a hash of its weights, so its vectors never mix with
the teacher's.

The teacher's vectors of the texts go through the text-vector caches (`encode_cached`, and the
store when one is given), so a store encoded already costs nothing to distil from.
"""

from __future__ import annotations

__all__ = ["DistilConfig", "DistilResult", "distil"]

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lmrec.errors import LmrecError
from lmrec.text.cache import encode_cached
from lmrec.text.encoders import SentenceTransformerEncoder, load_encoder
from lmrec.text.templates import item_texts

if TYPE_CHECKING:
    from lmrec.data import Dataset
    from lmrec.store import Store


class DistilConfig(BaseModel):
    """Every option of one distillation run (saved in the version's lmrec_encoder.json).

    `steps` caps the gradient steps (default: all `epochs`); `max_seconds` stops after the
    step that passes it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    teacher: str = "minilm"
    """Encoder spec of the teacher: a sentence-transformers encoder run by torch in fp32."""
    layers: tuple[int, ...] = (0, 2, 4, 5)
    """The teacher's Transformer layers the student keeps, in order (0-based). Four of
    MiniLM's six: on Amazon Beauty's item texts the 4-layer student reached cosine 0.985 with
    the teacher against 0.938 for layers 0,2,4 (`benchmarks/encoders.md` §7)."""
    epochs: int = Field(8, ge=1)
    steps: int | None = Field(None, ge=1)
    max_seconds: float | None = Field(None, gt=0)
    batch_size: int = Field(32, ge=2)
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup: float = Field(0.05, ge=0, lt=1)
    """Fraction of the steps with a linear learning-rate warm-up (then linear decay to 0)."""
    item_template: str | None = None
    seed: int = 0

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("keep at least one layer")
        if any(i < 0 for i in v) or len(set(v)) != len(v) or list(v) != sorted(v):
            raise ValueError(f"layers must be distinct, increasing indices >= 0, got {list(v)}")
        return v

    @classmethod
    def of(cls, **options: Any) -> DistilConfig:
        """The config from keyword options; a bad option is an LmrecError that names it."""
        try:
            return cls(**options)
        except ValidationError as exc:
            errs = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()
            )
            raise LmrecError(f"distil: {errs}") from None


@dataclass
class DistilResult:
    """Where the student is, its name (cache key) and its training record: loss per step, the
    mean cosine of its vectors with the teacher's on the training texts before training
    (layers dropped, nothing learnt) and after."""

    path: Path
    name: str
    layers: tuple[int, ...]
    texts: int
    steps: int
    losses: list[float] = field(default_factory=list)
    cos_before: float = 0.0
    cos_after: float = 0.0
    seconds: float = 0.0


def _student(teacher_model: Any, layers: Sequence[int]) -> Any:
    """A deep copy of the teacher that keeps only `layers` of its Transformer stack."""
    import torch

    from lmrec.text.finetune import _layers_of

    student = copy.deepcopy(teacher_model)
    auto = student[0].auto_model
    stack = _layers_of(auto)
    if max(layers) >= len(stack):
        raise LmrecError(
            f"distil: layers {list(layers)} asked for, but the teacher has {len(stack)} layers "
            f"(0..{len(stack) - 1})"
        )
    kept = torch.nn.ModuleList([stack[i] for i in layers])
    for path in ("encoder.layer", "layers", "transformer.layer", "encoder.layers"):
        owner_path, _, attr = path.rpartition(".")
        owner = auto.get_submodule(owner_path) if owner_path else auto
        if getattr(owner, attr, None) is stack:
            setattr(owner, attr, kept)
            break
    for key in ("num_hidden_layers", "n_layers", "num_layers"):
        if hasattr(auto.config, key):
            setattr(auto.config, key, len(layers))
    # Layer indices inside attention modules (used by caches only) follow the new order.
    for new_idx, layer in enumerate(kept):
        for mod in layer.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = new_idx
    return student


def _mean_cos(model: Any, texts: list[str], targets: np.ndarray, batch_size: int) -> float:
    import torch

    with torch.inference_mode():
        v = model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                         normalize_embeddings=True, show_progress_bar=False)  # fmt: skip
    return float((np.asarray(v, np.float32) * targets).sum(axis=1).mean())


def distil(
    dataset: Dataset | None,
    out: str | Path,
    *,
    texts: Sequence[str] = (),
    config: DistilConfig | None = None,
    store: Store | None = None,
    progress: bool = False,
    **options: Any,
) -> DistilResult:
    """Distil a student of `config.teacher` on the dataset's item texts plus `texts` and save
    it as an encoder version under `out`. Options are `DistilConfig`'s (or pass `config`)."""
    import torch
    from tqdm.auto import tqdm

    from lmrec.text.finetune import _embed, _weights_hash, _write_version

    cfg = config if config is not None else DistilConfig.of(**options)
    t0 = time.perf_counter()
    teacher = load_encoder(cfg.teacher)
    if not isinstance(teacher, SentenceTransformerEncoder) or teacher.quantize:
        raise LmrecError(
            f"distil: the teacher {cfg.teacher!r} must be a sentence-transformers encoder in fp32 "
            "(e.g. 'minilm', 'mpnet', 'st:PATH'), not "
            f"{getattr(teacher, 'name', type(teacher).__name__)}"
        )
    pool = item_texts(dataset, template=cfg.item_template) if dataset is not None else []
    pool = list(dict.fromkeys([*map(str, pool), *map(str, texts)]))  # distinct, in order
    pool = [t for t in pool if t.strip()]
    if len(pool) < 2:
        raise LmrecError(
            f"distil: {len(pool)} distinct non-empty texts to learn from; need at least 2 "
            "(import items with titles first, or give texts)"
        )
    targets = encode_cached(teacher, pool, store, progress=progress)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = _student(teacher.model, cfg.layers)
    bs = min(cfg.batch_size, len(pool))
    cos_before = _mean_cos(model, pool, targets, 64)
    per_epoch = math.ceil(len(pool) / bs)
    total = cfg.epochs * per_epoch if cfg.steps is None else min(cfg.steps, cfg.epochs * per_epoch)
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
    )
    warm = max(1, int(cfg.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    y = torch.from_numpy(np.asarray(targets, np.float32))
    losses: list[float] = []
    model.train()
    train_t0 = time.perf_counter()
    bar = tqdm(total=total, desc=f"distilling {len(cfg.layers)} layers", disable=not progress)
    try:
        while len(losses) < total:
            order = rng.permutation(len(pool))
            for s in range(0, len(pool), bs):
                if len(losses) >= total:
                    break
                bt = order[s : s + bs]
                if len(bt) < 2:
                    continue
                v = _embed(model, [pool[int(i)] for i in bt], "cpu")
                loss = 1.0 - (v * y[torch.from_numpy(bt)]).sum(dim=1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.item()))
                bar.update(1)
                if (
                    cfg.max_seconds is not None
                    and time.perf_counter() - train_t0 >= cfg.max_seconds
                ):
                    total = len(losses)
                    break
    finally:
        bar.close()
        model.eval()
    cos_after = _mean_cos(model, pool, targets, 64)
    name = f"{teacher.name}+distil-L{len(cfg.layers)}@{_weights_hash(model)}"
    seconds = time.perf_counter() - t0
    meta = {
        "kind": "sentence-transformers",
        "path": "model",
        "name": name,
        "base": teacher.name,
        "mode": "distil",
        "layers": list(cfg.layers),
        "texts": len(pool),
        "trained_on": dataset.name if dataset is not None else None,
        "steps": len(losses),
        "cos_before": round(cos_before, 5),
        "cos_after": round(cos_after, 5),
        "losses": losses,
        "config": cfg.model_dump(mode="json"),
        "training": {
            "torch_threads": torch.get_num_threads(),
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "seconds": round(seconds, 2),
            "train_seconds": round(time.perf_counter() - train_t0, 2),
        },
    }
    _write_version(Path(out), meta, lambda p: model.save(str(p / "model")))
    return DistilResult(Path(out), name, cfg.layers, len(pool), len(losses), losses, cos_before,
                        cos_after, seconds)  # fmt: skip
