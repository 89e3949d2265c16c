"""Fine-tuning the text encoder data-parallel on a Ray cluster (Ray Train, Torch DDP).

:func:`ray_fit_text_encoder` has the signature of :func:`indexer.finetune.fit_text_encoder`, so
the fine-tuning stage takes either. Each Ray Train worker loads the base weights, runs the very
same ``fit_text_encoder`` (sentence-transformers' trainer sees the process group Ray Train set up
and wraps the model in DDP: each worker takes its share of every epoch's batches, the gradients
are averaged), and worker 0 hands the fine-tuned weights and its report back as a Ray Train
checkpoint. The pipeline uses it when the cluster has two GPUs or more; on CPUs DDP only adds
communication (the tests run it on two CPU workers with gloo to check the wiring, not for speed).

``work_dir`` holds the per-epoch checkpoints every worker reads back at the end (the best epoch):
on a multi-node cluster it must be on storage every node mounts.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import service  # noqa: F401 - installs the torchvision import hook in Ray workers too (service._compat)
from indexer.finetune import FitOptions, FitReport, PairTexts, fit_text_encoder
from indexer.ray_cluster import import_ray

log = logging.getLogger("recsys.indexer")

BASE = "ray-base"  # the base weights every worker starts from
REPORT = "fit-report.json"


def _train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: fine-tune a copy of the base; worker 0 reports the result."""
    import ray.train
    import ray.train.torch
    from sentence_transformers import SentenceTransformer

    context = ray.train.get_context()
    device = str(ray.train.torch.get_device())
    model = SentenceTransformer(config["base"], device="cpu", local_files_only=True)
    report = fit_text_encoder(
        model, PairTexts(*config["train"]), PairTexts(*config["valid"]), work_dir=Path(config["work_dir"]),
        options=FitOptions(**config["options"]), device=device, progress=config["progress"],
    )
    if context.get_world_rank() != 0:
        ray.train.report({"rank": context.get_world_rank()})
        return
    with tempfile.TemporaryDirectory() as out:
        model.save(out)
        report_dict = report.as_dict() | {"workers": context.get_world_size()}
        (Path(out) / REPORT).write_text(json.dumps(report_dict))
        ray.train.report({"valid_loss": report.best_valid_loss}, checkpoint=ray.train.Checkpoint.from_directory(out))


def ray_fit_text_encoder(model: Any, train: PairTexts, valid: PairTexts, *, work_dir: Path, options: FitOptions,
                         device: str = "cpu", progress: bool = False, workers: int = 2,
                         use_gpu: bool | None = None) -> FitReport:
    """:func:`~indexer.finetune.fit_text_encoder` on ``workers`` Ray Train workers (Ray must be
    connected: :func:`indexer.ray_cluster.connect`); ``model`` gets the fine-tuned weights.

    ``use_gpu``: one GPU per worker (default: when ``device`` is a CUDA device).

    Raises:
        ValueError: as ``fit_text_encoder``.
        RuntimeError: the Ray Train run failed (its error says which worker and why).
    """
    import_ray()
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from sentence_transformers import SentenceTransformer

    if len(train) < 2 or len(valid) < 1:
        raise ValueError(f"fine-tuning needs >= 2 training and >= 1 validation pairs, got {len(train)} "
                         f"and {len(valid)}")
    work_dir = Path(work_dir)
    base = work_dir / BASE
    shutil.rmtree(base, ignore_errors=True)
    model.save(str(base))
    config = {
        "base": str(base), "work_dir": str(work_dir / "ddp"), "options": asdict(options), "progress": progress,
        "train": (list(train.anchors), list(train.positives)), "valid": (list(valid.anchors), list(valid.positives)),
    }
    gpu = device.startswith("cuda") if use_gpu is None else use_gpu
    log.info("finetune: %d Ray Train workers (%s), %d training pairs", workers, "GPU" if gpu else "CPU", len(train))
    trainer = TorchTrainer(
        _train_loop, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu),
        run_config=RunConfig(name="finetune", storage_path=str((work_dir / "ray-train").resolve())),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"Ray Train fine-tuning failed: {result.error}") from result.error
    with result.checkpoint.as_directory() as folder:
        report = json.loads((Path(folder) / REPORT).read_text())
        tuned = SentenceTransformer(folder, device="cpu", local_files_only=True)
    model.load_state_dict(tuned.state_dict())
    workers_run = report.pop("workers", workers)
    log.info("finetune: %d workers ran %s epochs, best held-out loss %.4f", workers_run, report["epochs_run"],
             report["best_valid_loss"])
    return FitReport(**report)


class ClusterFit:
    """The fine-tuning stage's ``fit`` on a rebuild with ``ray_address``: data-parallel on the
    cluster's GPUs when it has two or more (``ray_workers`` caps them), else in this process
    (one GPU or CPUs only: DDP would add communication and nothing else)."""

    def __init__(self, cluster: Any, max_workers: int = 0):
        self.cluster = cluster  # indexer.ray_cluster.LazyCluster
        self.max_workers = max_workers

    def __call__(self, model: Any, train: PairTexts, valid: PairTexts, **kwargs: Any) -> FitReport:
        gpus = int(self.cluster.ensure().gpus)
        workers = min(gpus, self.max_workers) if self.max_workers else gpus
        if workers < 2:
            log.info("finetune: %d GPU(s) on the Ray cluster: fine-tuning in this process", gpus)
            return fit_text_encoder(model, train, valid, **kwargs)
        return ray_fit_text_encoder(model, train, valid, workers=workers, use_gpu=True, **kwargs)


__all__ = ["ClusterFit", "ray_fit_text_encoder"]
