"""Training and batch scoring on a Ray cluster (the optional extra `pip install lmrec[ray]`).

- Training (`train_on_ray`, `lmrec train --ray`): Ray Train's `TorchTrainer` starts the
  workers and joins them in a torch process group (gloo on CPU, NCCL on GPUs); each worker
  calls the same fitting function as every process of `lmrec train --procs N` under torchrun,
  so `lmrec.nn.trainer.Trainer` finds the group joined and runs the same
  DistributedDataParallel loop (each worker keeps its share of every global batch). The first
  worker saves the fitted model with the model's own `save` and hands the directory back as a
  Ray checkpoint; its files are copied unchanged to the output directory.
- Batch evaluation (`rank_on_ray`, `lmrec evaluate --ray`): Ray actors, each holding the
  model (loaded once per actor from the model's saved files) and the split, rank chunks of
  `batch_size` users with `lmrec.evaluation.runner.UserRanker`; the lists come back in user
  order and are measured by the same code as in one process, so the metrics are the same.

The model travels as its saved artifact (JSON + npz bytes, never pickle); the split travels
through Ray's object store. The lmrec package is shipped to the cluster with the job
(`runtime_env` py_modules), so the workers run this very code.
"""

from __future__ import annotations

__all__ = ["RayConfig", "connect", "rank_on_ray", "require_ray", "train_on_ray"]

import contextlib
import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lmrec.errors import LmrecError

if TYPE_CHECKING:
    from lmrec.evaluation.runner import UserRanker
    from lmrec.models.base import Recommender


class RayConfig(BaseModel):
    """Where and how to run on Ray (training and evaluation alike)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    address: str = "local"
    """'local': start a Ray instance on this machine for the run; else the address of a
    running cluster ('auto', 'HOST:PORT' of the head's GCS, or 'ray://HOST:10001')."""
    workers: int = Field(2, ge=1)
    """Training workers (processes of the DDP group) or evaluation actors."""
    cpus_per_worker: int = Field(1, ge=1)
    """CPUs each worker reserves (and torch threads it uses)."""
    use_gpu: bool | None = None
    """Train on one GPU per worker; None: when the cluster has a GPU for every worker."""
    storage: str | None = None
    """Where Ray Train writes the checkpoint it hands back (None: a temporary directory on
    this machine, which the workers of a one-machine cluster can reach; for several hosts a
    shared file system or a bucket URI)."""


def require_ray() -> Any:
    """The `ray` module, or an error that says how to install it."""
    try:
        import ray
        import ray.train
    except ImportError as e:
        raise LmrecError(
            f"--ray needs Ray with Ray Train ({e.msg}): pip install 'lmrec[ray]'"
        ) from None
    return ray


@contextlib.contextmanager
def connect(config: RayConfig) -> Iterator[Any]:
    """The `ray` module, connected as `config` says (a Ray session already started in this
    process is used as it is, and left running)."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    import lmrec

    runtime_env = {
        "py_modules": [str(Path(lmrec.__file__).parent)],
        "env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    }
    kw: dict[str, Any] = {"runtime_env": runtime_env, "log_to_driver": True}
    if config.address == "local":
        kw.update(num_cpus=config.workers * config.cpus_per_worker, include_dashboard=False)
    else:
        kw["address"] = config.address
    try:
        ray.init(**kw)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = "a local Ray instance" if config.address == "local" else config.address
        raise LmrecError(f"--ray {config.address}: could not start or reach {where}: {e}") from e
    try:
        yield ray
    finally:
        ray.shutdown()


# -- training ------------------------------------------------------------------------------------


def _use_gpu(ray: Any, config: RayConfig) -> bool:
    if config.use_gpu is not None:
        return config.use_gpu
    return float(ray.cluster_resources().get("GPU", 0)) >= config.workers


def _train_worker(loop: dict[str, Any]) -> None:
    """One Ray Train worker: fit (DDP in the group Ray Train joined), and the first worker
    saves the model and reports it as the checkpoint; every worker reports once."""
    import ray.train
    import torch

    torch.set_num_threads(loop["threads"])
    if loop["gpu"]:
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())
    model, info = loop["fit"]()
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report({"info": "{}"}, checkpoint=None)
        return
    with tempfile.TemporaryDirectory(prefix="lmrec-ray-") as tmp:
        out = model.save(Path(tmp) / "model")
        checkpoint = ray.train.Checkpoint.from_directory(str(out))
        ray.train.report({"info": json.dumps(info)}, checkpoint=checkpoint)


def train_on_ray(
    fit: Callable[[], tuple[Recommender, dict[str, Any]]], out: str | Path, config: RayConfig
) -> dict[str, Any]:
    """Run `fit` in `config.workers` Ray Train workers joined in one torch process group;
    save the first worker's model to `out` (its own saved files, unchanged) and return the
    JSON-ready `info` that its `fit` returned. `fit` (a picklable callable, e.g. a
    `functools.partial` of a module-level function) builds and fits the model and returns
    (model, info)."""
    with connect(config) as ray:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        gpu = _use_gpu(ray, config)
        own_storage = config.storage is None
        storage = tempfile.mkdtemp(prefix="lmrec-ray-train-") if own_storage else config.storage
        try:
            trainer = TorchTrainer(
                _train_worker,
                train_loop_config={"fit": fit, "threads": config.cpus_per_worker, "gpu": gpu},
                torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
                scaling_config=ScalingConfig(
                    num_workers=config.workers,
                    use_gpu=gpu,
                    resources_per_worker={"CPU": config.cpus_per_worker},
                ),
                run_config=RunConfig(
                    name=f"lmrec-train-{uuid.uuid4().hex[:8]}", storage_path=storage
                ),
            )
            try:
                result = trainer.fit()
            except Exception as e:  # Ray wraps the workers' errors in its own
                raise LmrecError(f"training on Ray ({config.address}) failed: {e}") from e
            if result.checkpoint is None:
                raise LmrecError(f"training on Ray ({config.address}): no model came back")
            _copy_artifact(result.checkpoint, out)
            return json.loads(result.metrics.get("info") or "{}")
        finally:
            if own_storage:
                shutil.rmtree(storage, ignore_errors=True)


def _copy_artifact(checkpoint: Any, out: str | Path) -> None:
    """The checkpoint's files (a saved model) into `out`, written through `staged_dir`."""
    from lmrec.files import staged_dir

    with checkpoint.as_directory() as src, staged_dir(out, "config.json") as tmp:
        if not (Path(src) / "config.json").exists():
            raise LmrecError("training on Ray: the checkpoint holds no saved model")
        shutil.copytree(src, tmp, dirs_exist_ok=True)


# -- evaluation ----------------------------------------------------------------------------------


def _artifact_bytes(model: Recommender) -> dict[str, bytes]:
    """The files of the model's saved artifact, by relative path."""
    with tempfile.TemporaryDirectory(prefix="lmrec-ray-") as tmp:
        root = model.save(Path(tmp) / "model")
        return {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }


def _packed(model: Any) -> dict[str, Any]:
    """What a worker needs to rebuild the ranked model: a Recommender's saved files, and for
    a re-ranked model (`lmrec.rerank.diversify`) also its RerankConfig and categories."""
    from lmrec.models.base import Recommender
    from lmrec.rerank.wrappers import Reranked

    if isinstance(model, Recommender):
        return {"files": _artifact_bytes(model)}
    if isinstance(model, Reranked):
        return {
            "files": _artifact_bytes(model.model),
            "rerank": model.config,
            "categories": model.categories,
        }
    raise LmrecError(
        f"evaluation on Ray ranks saved lmrec models (a Recommender or one re-ranked by "
        f"lmrec.rerank.diversify), not a {type(model).__name__}"
    )


def _unpacked(packed: dict[str, Any], tmp: Path) -> Any:
    from lmrec.models.base import Recommender

    for rel, data in packed["files"].items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    model = Recommender.load(tmp)
    if "rerank" in packed:
        from lmrec.rerank import diversify

        return diversify(model, packed["rerank"], categories=packed["categories"])
    return model


class _RankWorker:
    """A Ray actor: the model (loaded once) and the split, ranking chunks of users."""

    def __init__(self, packed: dict[str, Any], split: Any, options: dict[str, Any], threads: int):
        from lmrec.evaluation.runner import UserRanker

        with contextlib.suppress(ImportError):
            import torch

            torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory(prefix="lmrec-ray-") as tmp:
            model = _unpacked(packed, Path(tmp))
        self.ranker = UserRanker(model, split, **options)

    def rank(self, users: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray, int]:
        return self.ranker.rank(users, depth, batch_size=len(users))


def rank_on_ray(
    ranker: UserRanker,
    split: Any,
    depth: int,
    batch_size: int,
    config: RayConfig,
    step: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """`ranker.rank(ranker.users, depth, batch_size)` on Ray: chunks of `batch_size` users
    (the batches one process would rank) over `config.workers` actors, each holding its own
    copy of the model; the lists come back in user order."""
    users = ranker.users
    chunks = [users[s : s + batch_size] for s in range(0, len(users), batch_size)]
    with connect(config) as ray:
        from ray.util import ActorPool

        packed = ray.put(_packed(ranker.model))
        split_ref = ray.put(split)
        worker = ray.remote(num_cpus=config.cpus_per_worker)(_RankWorker)
        n = min(config.workers, len(chunks))
        actors = [
            worker.remote(packed, split_ref, ranker.options, config.cpus_per_worker)
            for _ in range(n)
        ]
        try:
            parts = []
            pool = ActorPool(actors)
            for part in pool.map(lambda a, c: a.rank.remote(c, depth), chunks):
                parts.append(part)
                if step is not None:
                    step(len(part[0]))
        except ray.exceptions.RayError as e:
            raise LmrecError(f"evaluation on Ray ({config.address}) failed: {e}") from e
        finally:
            for a in actors:
                ray.kill(a)
    lists = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, depth), np.int64)
    auc = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    return lists, auc, sum(p[2] for p in parts)
