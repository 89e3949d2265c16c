"""Fine-tuning the text encoder on behaviour pairs, with sentence-transformers' own trainer.

Anchor → positive text pairs (an item and an item engaged with alongside it, or a search query
and the item it led to; :mod:`indexer.finetune_pairs`) train with
``MultipleNegativesRankingLoss``: in a batch, every other pair's positive is a negative, so the
encoder learns to put co-engaged items near each other and away from the rest. Batches never
hold the same text twice (``BatchSamplers.NO_DUPLICATES``: a duplicate would be a false negative).

``SentenceTransformerTrainer`` runs the loop: warm-up and decay of the learning rate, the loss
on held-out pairs after each epoch, early stopping when it stops falling (the best epoch's
weights are kept), a checkpoint per epoch (a killed fine-tune resumes from the last one when it
is run again on the same data), progress bars, and bf16/fp16 on a GPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("recsys.indexer")

CHECKPOINTS = "checkpoints"
DATA_STAMP = "data.json"


@dataclass(frozen=True)
class PairTexts:
    """Anchor and positive texts, one pair per index."""

    anchors: Sequence[str]
    positives: Sequence[str]

    def __post_init__(self) -> None:
        if len(self.anchors) != len(self.positives):
            raise ValueError(f"{len(self.anchors)} anchors for {len(self.positives)} positives")

    def __len__(self) -> int:
        return len(self.anchors)

    def digest(self) -> str:
        h = hashlib.sha256()
        for a, p in zip(self.anchors, self.positives):
            h.update(f"{a}\x00{p}\x01".encode("utf-8", "surrogatepass"))
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class FitOptions:
    epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.1
    patience: int = 1
    seed: int = 0


@dataclass
class FitReport:
    """What one fine-tune did: the figures the manifest and the benchmarks record."""

    train_pairs: int
    valid_pairs: int
    epochs_run: float
    steps: int
    valid_loss: list[float]  # before training (the base weights), then after each epoch
    train_loss: list[float]  # mean training loss of each epoch
    best_valid_loss: float
    seconds: float
    pairs_per_second: float  # training pairs seen per second of training (epochs x pairs / time)
    peak_rss_mb: float  # the process's peak resident memory so far (includes what ran before)
    device: str
    precision: str
    resumed_from: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dataset(pairs: PairTexts):
    from datasets import Dataset

    return Dataset.from_dict({"anchor": list(pairs.anchors), "positive": list(pairs.positives)})


def _precision(device: str) -> tuple[str, dict[str, bool]]:
    """bf16 where the GPU has it, else fp16 on a GPU, fp32 on CPU (fp16 is slow and lossy there)."""
    import torch

    if not device.startswith("cuda"):
        return "fp32", {"use_cpu": True}
    if torch.cuda.is_bf16_supported():
        return "bf16", {"bf16": True}
    return "fp16", {"fp16": True}


def _prepare_work_dir(work_dir: Path, stamp: dict[str, Any]) -> Path:
    """The checkpoint folder, emptied unless its checkpoints come from exactly this data and options."""
    checkpoints = work_dir / CHECKPOINTS
    stamp_path = work_dir / DATA_STAMP
    try:
        same = json.loads(stamp_path.read_text()) == stamp
    except (OSError, ValueError):
        same = False
    if not same and checkpoints.exists():
        log.info("finetune: checkpoints in %s are from other data or options: starting over", checkpoints)
        shutil.rmtree(checkpoints, ignore_errors=True)  # data-parallel workers may race to it
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp_path.write_text(json.dumps(stamp, sort_keys=True))
    return checkpoints


def fit_text_encoder(model: Any, train: PairTexts, valid: PairTexts, *, work_dir: Path, options: FitOptions,
                     device: str = "cpu", progress: bool = False) -> FitReport:
    """Fine-tune ``model`` (a SentenceTransformer, changed in place) on ``train``; early-stop on ``valid``.

    ``model`` ends with the weights of the epoch with the lowest held-out loss (even when no
    epoch beat the base weights: the caller's quality gate compares). Checkpoints go to
    ``work_dir/checkpoints``; a run on the same pairs and options resumes from the last one.

    Raises:
        ValueError: fewer than 2 training or 1 validation pairs.
    """
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    from transformers import EarlyStoppingCallback
    from transformers.trainer_utils import get_last_checkpoint

    if len(train) < 2 or len(valid) < 1:
        raise ValueError(f"fine-tuning needs >= 2 training and >= 1 validation pairs, got {len(train)} "
                         f"and {len(valid)}")
    precision, precision_args = _precision(device)
    stamp = {"train": train.digest(), "valid": valid.digest(), "options": asdict(options), "precision": precision}
    checkpoints = _prepare_work_dir(Path(work_dir), stamp)
    model.to(device)
    # Data-parallel (Ray Train or torchrun set WORLD_SIZE): each worker takes batch_size pairs a
    # step, and the loss gathers every worker's positives, so each anchor meets the whole step's.
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    # Small data: an epoch may be one batch; never larger than a worker's share (DDP drops a last
    # short batch), so every epoch steps and every evaluation has a batch.
    batch = max(2, min(options.batch_size, len(train) // world))
    eval_batch = max(1, min(batch, len(valid) // world))
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints), num_train_epochs=options.epochs, per_device_train_batch_size=batch,
        # warmup_steps below 1 is a share of the steps (transformers 5 retired warmup_ratio).
        per_device_eval_batch_size=eval_batch, learning_rate=options.learning_rate, warmup_steps=options.warmup_ratio,
        batch_sampler=BatchSamplers.NO_DUPLICATES, eval_strategy="epoch", save_strategy="epoch",
        logging_strategy="epoch", save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="eval_loss",
        greater_is_better=False, report_to="none", disable_tqdm=not progress, seed=options.seed,
        data_seed=options.seed, dataloader_num_workers=0, **precision_args,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=_dataset(train), eval_dataset=_dataset(valid),
        loss=MultipleNegativesRankingLoss(model, gather_across_devices=world > 1),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=options.patience)],
    )
    resume = get_last_checkpoint(str(checkpoints)) if checkpoints.exists() else None
    base_loss = float(trainer.evaluate()["eval_loss"])
    log.info("finetune: %d training pairs, %d held out; held-out loss %.4f before training%s", len(train),
             len(valid), base_loss, f" (resuming from {resume})" if resume else "")
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    history = trainer.state.log_history
    valid_loss = [base_loss] + [float(h["eval_loss"]) for h in history if "eval_loss" in h]
    train_loss = [float(h["loss"]) for h in history if "loss" in h and "eval_loss" not in h]
    best = min(valid_loss)
    if valid_loss[0] <= best and len(valid_loss) > 1:
        log.info("finetune: no epoch beat the base weights on held-out pairs")
    epochs = float(trainer.state.epoch or 0.0)
    return FitReport(
        train_pairs=len(train), valid_pairs=len(valid), epochs_run=round(epochs, 3), steps=int(output.global_step),
        valid_loss=[round(v, 5) for v in valid_loss], train_loss=[round(v, 5) for v in train_loss],
        best_valid_loss=round(best, 5), seconds=round(seconds, 2),
        pairs_per_second=round(epochs * len(train) / seconds, 1) if seconds > 0 else 0.0,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), device=device,
        precision=precision, resumed_from=Path(resume).name if resume else None, options=asdict(options),
    )


__all__ = ["FitOptions", "FitReport", "PairTexts", "fit_text_encoder"]
