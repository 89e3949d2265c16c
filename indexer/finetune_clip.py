"""Fine-tuning the CLIP encoder on (image, text) pairs from the catalog.

Pairs are an item's image with its own title, or (co-engagement) with the title of an item people
engage with alongside it. Training is open_clip's own recipe cut down to one process: its
contrastive loss (``open_clip.loss.ClipLoss`` with the model's ``logit_scale``), AdamW without
weight decay on gains, biases and the scale, and the scale clamped to ln(100) after each step.
fp32 on CPU; bf16 autocast over fp32 weights on CUDA.

A seeded share of the pairs is held out; its contrastive loss is measured on the base weights
(epoch 0) and after every epoch. The best weights win and training stops after ``patience`` epochs
without improvement. They are written as a plain ``torch.save`` state dict (or safetensors, by
suffix): what ``open_clip.load_checkpoint`` reads, so ``load_clip_encoder`` loads them when
``clip_pretrained`` is that path.

Images are decoded once up front to find the bad ones (skipped and counted, never raised), then
again per batch in the encoder's worker threads: holding every preprocessed image would cost
~150 KB each at 224 px. The encoder passed in is never modified; a copy of its model is trained.

Nothing heavy is imported at module import: torch, open_clip and tqdm load inside the functions.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.vectors.clip_encoder import ClipEncoder
from service.vectors.encoders import ImageSource, _is_cuda

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

log = logging.getLogger("recsys.indexer")

# open_clip clamps the learned temperature at 100 (as the CLIP paper does); so do we.
_LOGIT_SCALE_MAX = math.log(100)
# Bumped when the resume file's layout changes, so an old folder is refused, not misread.
_STATE_FORMAT = 1
_STATE_FILE = "state.pt"


@dataclass(frozen=True)
class ClipFinetuneReport:
    """Outcome of :func:`finetune_clip`.

    Attributes:
        pairs: usable pairs (train + valid).
        train_pairs: pairs trained on.
        valid_pairs: held-out pairs the loss is measured on.
        skipped_images: pairs dropped because their image could not be used.
        image_errors: ``{index into pairs: reason}`` for those.
        epochs_run: epochs completed in total, resumed ones included.
        resumed_from_epoch: the epoch a checkpoint resumed from (0: a fresh run).
        best_epoch: the epoch whose weights were written (0: the base weights were never beaten).
        train_loss: mean training loss of epochs 1..epochs_run (``train_loss[0]`` is epoch 1).
        valid_loss: held-out loss of epochs 0..epochs_run (``valid_loss[0]``: the base weights).
        steps: optimizer steps taken by this call.
        seconds: wall time of this call.
        pairs_per_second: training pairs per second of this call's training (0.0 when it trained none).
        peak_rss_mb: the process's peak resident memory so far (None where ``resource`` is missing).
        out_path: where the best weights were written.
    """

    pairs: int
    train_pairs: int
    valid_pairs: int
    skipped_images: int
    image_errors: Mapping[int, str]
    epochs_run: int
    resumed_from_epoch: int
    best_epoch: int
    train_loss: tuple[float, ...]
    valid_loss: tuple[float, ...]
    steps: int
    seconds: float
    pairs_per_second: float
    peak_rss_mb: float | None
    out_path: Path


def finetune_clip(
    encoder: ClipEncoder,
    pairs: Sequence[tuple[ImageSource, str]],
    *,
    out_path: Path,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 1e-5,
    weight_decay: float = 0.1,
    valid_fraction: float = 0.1,
    patience: int = 1,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    progress: bool = False,
) -> ClipFinetuneReport:
    """Fine-tune ``encoder``'s model contrastively on ``(image, text)`` pairs; write the best weights.

    Args:
        pairs: ``(image, text)``; images as ``ClipEncoder.encode_images`` takes them (never URLs).
        out_path: checkpoint to write (atomically); ``.safetensors`` selects that format.
        epochs: total epochs, counting those a resumed run already did.
        batch_size: pairs per step; the other pairs of a batch are each pair's negatives.
        valid_fraction: share of the usable pairs held out (at least 2 pairs, as is the rest).
        patience: epochs without a lower held-out loss before stopping. A run that stopped
            early stays stopped when resumed, unless ``patience`` is raised.
        seed: fixes the split and each epoch's shuffle (so a resumed run sees the same order).
        checkpoint_dir: when given, the model, optimizer and history are saved there after each
            epoch, and a later call with the same folder and inputs continues from them.
        progress: show a tqdm bar over the steps.

    Raises:
        ValueError: bad arguments, fewer than 4 usable pairs, or a ``checkpoint_dir`` holding a
            run of other pairs, base weights or settings.
    """
    started = time.perf_counter()
    out_path = Path(out_path)
    _check_args(pairs, out_path, epochs, batch_size, learning_rate, weight_decay, valid_fraction, patience)

    import torch
    from open_clip.loss import ClipLoss

    workers = max(1, int(getattr(encoder, "_image_workers", 4)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clip-finetune") as pool:
        keys = [_source_key(source) for source, _ in pairs]
        errors = _scan_images(encoder, pool, pairs, keys)
        usable = np.array([i for i in range(len(pairs)) if i not in errors], dtype=np.int64)
        if errors:
            log.warning("CLIP fine-tune: %d of %d pairs skipped (bad images), e.g. %s",
                        len(errors), len(pairs), next(iter(errors.values())))
        # Two per side: a contrastive loss over a single pair is always 0 and teaches nothing.
        if len(usable) < 4:
            raise ValueError(
                f"CLIP fine-tuning needs at least 4 pairs with usable images (2 to train on, 2 held "
                f"out); got {len(usable)} of {len(pairs)}"
            )
        order = np.random.default_rng(seed).permutation(usable)
        n_valid = min(max(2, round(valid_fraction * len(usable))), len(usable) - 2)
        valid_idx, train_idx = order[:n_valid], order[n_valid:]
        valid_chunks = _chunks(valid_idx, batch_size)

        device = encoder.device
        # A copy: the caller's encoder keeps the weights its revision names (fp16 on CUDA).
        model = copy.deepcopy(encoder.model).float().to(device)
        optimizer = _adamw(model, learning_rate, weight_decay)
        loss_fn = ClipLoss()

        def evaluate() -> float:
            model.eval()
            total, count = 0.0, 0
            with torch.no_grad():
                for images, tokens in _batches(encoder, pool, pairs, valid_chunks):
                    with _autocast(device):
                        loss = loss_fn(*_features(model, images, tokens))
                    total += loss.item() * len(tokens)
                    count += len(tokens)
            return total / max(count, 1)

        fingerprint = _fingerprint(encoder, pairs, keys, usable, seed=seed, valid_fraction=valid_fraction,
                                   batch_size=batch_size, learning_rate=learning_rate, weight_decay=weight_decay)
        state_path = Path(checkpoint_dir) / _STATE_FILE if checkpoint_dir is not None else None
        resumed = _load_state(state_path, fingerprint, model, optimizer) if state_path else None
        if resumed is not None:
            start_epoch, best_epoch, best_valid, bad_epochs = (
                resumed["epoch"], resumed["best_epoch"], resumed["best_valid"], resumed["bad_epochs"])
            train_losses, valid_losses = list(resumed["train_losses"]), list(resumed["valid_losses"])
            best_state = (_load_weights(Path(checkpoint_dir) / _best_name(best_epoch)) if best_epoch
                          else _cpu_state(encoder.model))
            log.info("CLIP fine-tune: resuming after epoch %d from %s", start_epoch, state_path)
        else:
            start_epoch, bad_epochs = 0, 0
            valid_losses = [evaluate()]
            train_losses = []
            best_epoch, best_valid, best_state = 0, valid_losses[0], _cpu_state(model)
            log.info("CLIP fine-tune: %d train and %d held-out pairs, base held-out loss %.4f",
                     len(train_idx), len(valid_idx), valid_losses[0])

        steps, trained_pairs, train_seconds = 0, 0, 0.0
        todo = max(0, epochs - start_epoch) if bad_epochs < patience else 0
        from tqdm.auto import tqdm

        steps_per_epoch = len(_chunks(train_idx, batch_size))
        with tqdm(total=todo * steps_per_epoch, desc="clip finetune", unit="step",
                  disable=not progress, leave=False) as bar:
            for epoch in range(start_epoch + 1, start_epoch + todo + 1):
                epoch_started = time.perf_counter()
                shuffled = np.random.default_rng([seed, epoch]).permutation(train_idx)
                model.train()
                total, count = 0.0, 0
                for images, tokens in _batches(encoder, pool, pairs, _chunks(shuffled, batch_size)):
                    with _autocast(device):
                        loss = loss_fn(*_features(model, images, tokens))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    with torch.no_grad():
                        model.logit_scale.clamp_(0, _LOGIT_SCALE_MAX)
                    total += loss.item() * len(tokens)
                    count += len(tokens)
                    steps += 1
                    bar.update(1)
                trained_pairs += count
                train_seconds += time.perf_counter() - epoch_started
                train_losses.append(total / max(count, 1))
                valid_losses.append(evaluate())
                if valid_losses[-1] < best_valid:
                    best_epoch, best_valid, best_state, bad_epochs = epoch, valid_losses[-1], _cpu_state(model), 0
                else:
                    bad_epochs += 1
                log.info(
                    "CLIP fine-tune epoch %d/%d: train loss %.4f, held-out loss %.4f (best %.4f, epoch %d), %.1f s",
                    epoch, epochs, train_losses[-1], valid_losses[-1], best_valid, best_epoch,
                    time.perf_counter() - epoch_started,
                )
                if state_path is not None:
                    _save_state(state_path, fingerprint, epoch, model, optimizer, best_epoch, best_valid,
                                bad_epochs, train_losses, valid_losses, best_state)
                if bad_epochs >= patience:
                    log.info("CLIP fine-tune: stopping after epoch %d, no improvement for %d epoch(s)",
                             epoch, bad_epochs)
                    break

    _atomic_save_weights(best_state, out_path)
    log.info("CLIP fine-tune: wrote epoch %d weights (held-out loss %.4f, base %.4f) to %s",
             best_epoch, best_valid, valid_losses[0], out_path)
    return ClipFinetuneReport(
        pairs=len(usable),
        train_pairs=len(train_idx),
        valid_pairs=len(valid_idx),
        skipped_images=len(errors),
        image_errors=errors,
        epochs_run=len(train_losses),
        resumed_from_epoch=start_epoch,
        best_epoch=best_epoch,
        train_loss=tuple(train_losses),
        valid_loss=tuple(valid_losses),
        steps=steps,
        seconds=time.perf_counter() - started,
        pairs_per_second=trained_pairs / train_seconds if train_seconds > 0 else 0.0,
        peak_rss_mb=_peak_rss_mb(),
        out_path=out_path,
    )


def _check_args(pairs: Sequence[Any], out_path: Path, epochs: int, batch_size: int, learning_rate: float,
                weight_decay: float, valid_fraction: float, patience: int) -> None:
    if len(pairs) == 0:
        raise ValueError("CLIP fine-tuning needs (image, text) pairs; got none")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (a pair's negatives are the rest of its batch); got {batch_size}")
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1); got {valid_fraction!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0; got {learning_rate!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0; got {weight_decay!r}")
    if out_path.suffix in (".npz", ".npy"):
        # open_clip reads those suffixes as big_vision (SigLIP) weights, not as a state dict.
        raise ValueError(f"out_path {out_path} must not end in .npz or .npy")
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[1], str)):
            raise ValueError(f"pairs[{i}] must be an (image, text) pair with a str text; got {pair!r:.100}")


def _adamw(model: Any, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW as open_clip_train builds it: no decay on gains, biases and the logit scale."""
    import torch

    no_decay, decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exclude = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(param)
    return torch.optim.AdamW(
        [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}],
        lr=learning_rate,
    )


def _features(model: Any, images: torch.Tensor, tokens: torch.Tensor) -> tuple:
    """``(image_features, text_features, logit_scale[, logit_bias])``: ClipLoss's positional args."""
    out = model(images, tokens)
    if isinstance(out, dict):  # models built with output_dict=True
        keys = ("image_features", "text_features", "logit_scale", "logit_bias")
        return tuple(out[k] for k in keys if k in out)
    return tuple(out)


def _autocast(device: str) -> contextlib.AbstractContextManager:
    import torch

    if _is_cuda(device):
        # bf16 keeps fp32's exponent range, so no loss scaler is needed; weights stay fp32.
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _chunks(indices: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive batches of ``size``; a trailing single pair joins the batch before it."""
    chunks = [indices[start : start + size] for start in range(0, len(indices), size)]
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2:] = [np.concatenate(chunks[-2:])]
    return chunks


def _scan_images(encoder: ClipEncoder, pool: ThreadPoolExecutor, pairs: Sequence[tuple[ImageSource, str]],
                 keys: Sequence[Any]) -> dict[int, str]:
    """Decode each distinct image once; ``{pair index: reason}`` for the pairs whose image fails.

    This also fully loads PIL images passed in, so the training threads only ever read them.
    """
    by_key: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        by_key.setdefault(key, []).append(i)
    futures = {key: pool.submit(encoder._load_one, pairs[idx[0]][0]) for key, idx in by_key.items()}
    errors: dict[int, str] = {}
    for key, fut in futures.items():
        result = fut.result()  # _load_one reports failures as strings, never raises
        if isinstance(result, str):
            errors.update((i, result) for i in by_key[key])
    return dict(sorted(errors.items()))


def _source_key(source: Any) -> Any:
    """Identity of an image source, so an image shared by many pairs is checked once."""
    if isinstance(source, (str, os.PathLike)):
        return ("path", os.fspath(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return ("bytes", hashlib.sha256(bytes(source)).hexdigest())
    return ("object", id(source))


def _batches(encoder: ClipEncoder, pool: ThreadPoolExecutor, pairs: Sequence[tuple[ImageSource, str]],
             chunks: Sequence[np.ndarray]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Model-ready ``(images, tokens)`` per chunk; the next chunk decodes in the pool meanwhile."""
    pending: deque[tuple[np.ndarray, list[Future]]] = deque()
    queue = deque(chunks)

    def submit_next() -> None:
        if queue:
            chunk = queue.popleft()
            pending.append((chunk, [pool.submit(encoder._load_one, pairs[i][0]) for i in chunk.tolist()]))

    submit_next()
    try:
        while pending:
            chunk, futures = pending.popleft()
            submit_next()
            arrays, texts = [], []
            for i, fut in zip(chunk.tolist(), futures):
                result = fut.result()
                if isinstance(result, str):
                    # Passed the scan, failed now (file changed underneath us): drop it, carry on.
                    log.warning("CLIP fine-tune: pair %d skipped, its image failed: %s", i, result)
                    continue
                arrays.append(result)
                texts.append(pairs[i][1])
            if len(arrays) < 2:
                continue
            # The encoder's own batching finishes preprocessing (Normalize) exactly as inference does.
            images = encoder._to_model_input(arrays, _is_cuda(encoder.device)).float()
            yield images, encoder._tokenizer(texts).to(encoder.device)
    finally:
        for _, futures in pending:
            for fut in futures:
                fut.cancel()


def _fingerprint(encoder: ClipEncoder, pairs: Sequence[tuple[ImageSource, str]], keys: Sequence[Any],
                 usable: np.ndarray, **settings: Any) -> str:
    """What a resumed run must share with the one that saved: base weights, pairs, settings."""
    h = hashlib.sha256()
    h.update(json.dumps({"revision": encoder.revision, "usable": usable.tolist(), **settings},
                        sort_keys=True).encode())
    for (source, text), key in zip(pairs, keys):
        # A PIL image has no stable identity across processes; its size and mode stand in.
        h.update(repr(key if key[0] != "object" else (getattr(source, "size", None),
                                                      getattr(source, "mode", None))).encode())
        h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _best_name(epoch: int) -> str:
    return f"best-epoch{epoch}.pt"


def _cpu_state(model: Any) -> dict[str, torch.Tensor]:
    """An fp32 CPU copy of the weights (the caller's model may be fp16 on a GPU)."""
    return {k: v.detach().to("cpu", copy=True).float() if v.is_floating_point() else v.detach().to("cpu", copy=True)
            for k, v in model.state_dict().items()}


def _save_state(path: Path, fingerprint: str, epoch: int, model: Any, optimizer: Any, best_epoch: int,
                best_valid: float, bad_epochs: int, train_losses: list[float], valid_losses: list[float],
                best_state: dict[str, torch.Tensor]) -> None:
    """Save the resume state; the best weights go to their own file, written first and named by epoch.

    The state never names a best file that is not complete on disk, and the best weights are not
    stored a second time inside the state (with the optimizer's moments it is already 3x the model).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    best_file = path.parent / _best_name(best_epoch)
    if best_epoch == epoch:
        _atomic_torch_save(best_state, best_file)
    _atomic_torch_save(
        {
            "format": _STATE_FORMAT,
            "fingerprint": fingerprint,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "best_epoch": best_epoch,
            "best_valid": best_valid,
            "bad_epochs": bad_epochs,
            "train_losses": list(train_losses),
            "valid_losses": list(valid_losses),
        },
        path,
    )
    for stale in path.parent.glob("best-epoch*.pt"):
        if stale.name != best_file.name:
            stale.unlink(missing_ok=True)


def _load_state(path: Path, fingerprint: str, model: Any, optimizer: Any) -> dict[str, Any] | None:
    """Restore model and optimizer from ``path``; the rest of the state, or None when absent."""
    import torch

    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != _STATE_FORMAT or state.get("fingerprint") != fingerprint:
        raise ValueError(
            f"checkpoint_dir {path.parent} holds a fine-tuning run of other pairs, base weights or "
            "settings; use a new folder or delete it to start over"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_save_weights(state: dict[str, torch.Tensor], out_path: Path) -> None:
    """Write a state dict as open_clip.load_checkpoint reads it: safetensors by suffix, else torch.save."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.suffix != ".safetensors":
        _atomic_torch_save(state, out_path)
        return
    from safetensors.torch import save_file

    tmp = out_path.with_name(out_path.name + ".tmp")
    # safetensors refuses tensors that share storage; separate contiguous copies never do.
    save_file({k: v.contiguous().clone() for k, v in state.items()}, str(tmp))
    os.replace(tmp, out_path)


def _peak_rss_mb() -> float | None:
    try:
        import resource
        import sys
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


__all__ = ["ClipFinetuneReport", "finetune_clip"]
