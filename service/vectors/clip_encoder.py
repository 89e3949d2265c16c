"""The CLIP encoder: open_clip's image and text towers in one normalised float32 vector space.

Images are decoded and preprocessed in worker threads that stay ahead of the model; a bad image is
skipped and reported, never raised. Model files are found by :mod:`service.vectors.model_files`
(its docstring covers offline use: ``HF_HUB_OFFLINE=1`` fails at once when nothing is cached).

Nothing heavy is imported at module import: torch, open_clip and Pillow load inside the methods and
:func:`load_clip_encoder`.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from service.vectors.encoders import (
    RANDOM_INIT_FOR_TESTS,
    EncoderUnavailable,
    ImageSource,
    _is_cuda,
    _l2_normalise_f32,
    _weights_digest,
    resolve_device,
)
from service.vectors.model_files import _register_config_file, _resolve_tag

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from PIL import Image as PILImage

    from service.settings import Settings

log = logging.getLogger(__name__)

# Seed for the random weights of RANDOM_INIT_FOR_TESTS (service.vectors.encoders): the same on every run.
_RANDOM_INIT_SEED = 0

# Decoded batches the image workers may run ahead of the model (memory bound: ~this many batches).
_PREFETCH_BATCHES = 2


class ClipEncoder:
    """open_clip image and text towers sharing one normalised float32 vector space."""

    def __init__(
        self,
        model: Any,
        preprocess: Callable[[Any], "torch.Tensor"],
        tokenizer: Callable[[list[str]], "torch.Tensor"],
        *,
        name: str,
        revision: str,
        dim: int,
        image_size: int | tuple[int, int],
        device: str,
        batch_size: int = 64,
        image_workers: int = 4,
        max_image_pixels: int = 40_000_000,
    ):
        self._model = model
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        self._name = name
        self._revision = revision
        self._dim = dim
        self._image_size = image_size
        self._device = device
        self._batch_size = batch_size
        self._image_workers = image_workers
        self._max_image_pixels = max_image_pixels
        self._dtype = None  # set lazily from the model (fp16 on CUDA)
        self._pil_steps, self._norm = _split_preprocess(preprocess)
        self._norm_on_device: tuple[Any, Any] | None = None

    @property
    def name(self) -> str:
        """``<model>/<pretrained tag or checkpoint file name>``."""
        return self._name

    @property
    def revision(self) -> str:
        """Digest of the weights, model config and image preprocessing."""
        return self._revision

    @property
    def dim(self) -> int:
        """Vector dimension (shared by images and texts)."""
        return self._dim

    @property
    def image_size(self) -> int | tuple[int, int]:
        """Input resolution of the image tower (int when square)."""
        return self._image_size

    @property
    def device(self) -> str:
        """Torch device the model runs on."""
        return self._device

    @property
    def model(self) -> Any:
        """The wrapped open_clip model."""
        return self._model

    @property
    def preprocess(self) -> Callable[[Any], "torch.Tensor"]:
        """open_clip's inference transform (PIL RGB image -> normalised tensor)."""
        return self._preprocess

    def _input_dtype(self) -> "torch.dtype":
        if self._dtype is None:
            self._dtype = next(self._model.parameters()).dtype
        return self._dtype

    def encode_text(
        self, texts: str | Sequence[str], *, batch_size: int | None = None
    ) -> np.ndarray:
        """Embed texts with the CLIP text tower: float32, unit norm; ``(dim,)`` for one string."""
        import torch

        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        if not items:
            return np.empty((0, self._dim), dtype=np.float32)
        bs = batch_size or self._batch_size
        parts = []
        with torch.inference_mode():
            # The tokenizer pads every text to the context length, so sorting by length buys nothing.
            for start in range(0, len(items), bs):
                tokens = self._tokenizer(items[start : start + bs]).to(self._device)
                parts.append(_l2_normalise_f32(self._model.encode_text(tokens)))
        out = np.concatenate(parts).astype(np.float32, copy=False)
        return out[0] if single else out

    def encode_images(
        self,
        sources: Sequence[ImageSource],
        *,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> tuple[np.ndarray, list[int], dict[int, str]]:
        """Embed images given as file paths, bytes or PIL images (never URLs: nothing is fetched here).

        Decoding and preprocessing run in ``image_workers`` threads that stay up to two batches
        ahead of the model. An item that cannot be used (missing, not an image, truncated, too
        many pixels, a URL) is skipped and reported; nothing is raised for it.

        Returns:
            ``(vectors, ok_indices, errors)``: float32 ``(m, dim)`` unit-norm vectors for the good
            items in input order, their indices into ``sources``, and ``{index: reason}`` for the
            rest.
        """
        import torch

        n = len(sources)
        ok: list[int] = []
        errors: dict[int, str] = {}
        parts: list[np.ndarray] = []
        if n == 0:
            return np.empty((0, self._dim), dtype=np.float32), ok, errors
        bs = batch_size or self._batch_size
        batches = deque(range(start, min(start + bs, n)) for start in range(0, n, bs))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n, unit="img", desc="images")
        pin = _is_cuda(self._device)
        with ThreadPoolExecutor(
            max_workers=self._image_workers, thread_name_prefix="clip-image"
        ) as pool:
            pending: deque[tuple[range, list[Future]]] = deque()

            def submit_next() -> None:
                if batches:
                    batch = batches.popleft()
                    pending.append((batch, [pool.submit(self._load_one, sources[i]) for i in batch]))

            for _ in range(_PREFETCH_BATCHES):
                submit_next()
            try:
                while pending:
                    batch, futures = pending.popleft()
                    # Queue the next batch before waiting: workers decode it while the model runs.
                    submit_next()
                    arrays, idx = [], []
                    for i, fut in zip(batch, futures):
                        result = fut.result()  # _load_one reports failures as strings, never raises
                        if isinstance(result, str):
                            errors[i] = result
                        else:
                            arrays.append(result)
                            idx.append(i)
                    if arrays:
                        with torch.inference_mode():
                            x = self._to_model_input(arrays, pin)
                            parts.append(_l2_normalise_f32(self._model.encode_image(x)))
                        ok.extend(idx)
                    if bar is not None:
                        bar.update(len(batch))
            except BaseException:
                # Do not decode batches nobody will read (model error, KeyboardInterrupt).
                for _, queued in pending:
                    for fut in queued:
                        fut.cancel()
                raise
            finally:
                if bar is not None:
                    bar.close()
        vectors = (
            np.concatenate(parts).astype(np.float32, copy=False)
            if parts
            else np.empty((0, self._dim), dtype=np.float32)
        )
        return vectors, ok, errors

    def _to_model_input(self, items: list[Any], pin: bool) -> "torch.Tensor":
        """Batch the workers' output and finish preprocessing on the model's device."""
        import torch

        dtype = self._input_dtype()
        if self._pil_steps is None:  # workers ran the whole transform
            x = torch.stack(items)
            if pin:
                x = x.pin_memory()
            return x.to(self._device, dtype=dtype, non_blocking=True)
        # uint8 HWC -> float CHW / 255, then Normalize: the same ops, in the same order and
        # precision, as torchvision's ToTensor and Normalize; uint8 also quarters the copy to a GPU.
        x = torch.from_numpy(np.stack(items))
        if pin:
            x = x.pin_memory()
        x = x.to(self._device, non_blocking=True).permute(0, 3, 1, 2).to(torch.float32).div_(255)
        if self._norm is not None:
            if self._norm_on_device is None:
                mean, std = self._norm
                self._norm_on_device = (
                    torch.as_tensor(mean, dtype=torch.float32, device=self._device).view(1, -1, 1, 1),
                    torch.as_tensor(std, dtype=torch.float32, device=self._device).view(1, -1, 1, 1),
                )
            mean_t, std_t = self._norm_on_device
            x.sub_(mean_t).div_(std_t)
        return x.to(dtype)

    # -- image loading (runs in worker threads) --------------------------------------------------

    def _load_one(self, source: ImageSource) -> "np.ndarray | torch.Tensor | str":
        """Decode and preprocess one image; return its pixels, or the reason it was rejected.

        Workers run only the PIL part of the transform and hand back uint8 arrays: torch ops in
        many threads at once oversubscribe its intra-op thread pool, and the tensor part is
        cheaper done once per batch (on the GPU when there is one).
        """
        try:
            image = self._open(source)
            try:
                rgb = self._to_rgb(image)
                if self._pil_steps is None:
                    return self._preprocess(rgb)
                pixels = np.asarray(self._pil_steps(rgb), dtype=np.uint8)
                if pixels.shape != self._pixel_shape():
                    raise _ImageRejected(f"preprocessing produced shape {pixels.shape}")
                return pixels
            finally:
                if image is not source:
                    image.close()
        except Exception as exc:  # noqa: BLE001
            # Pillow's decoders raise a zoo of types on corrupt input (OSError, SyntaxError,
            # struct.error, IndexError, ...); one bad file must never stop a whole batch.
            return f"{type(exc).__name__}: {exc}"

    def _pixel_shape(self) -> tuple[int, int, int]:
        size = self._image_size
        height, width = (size, size) if isinstance(size, int) else size
        return (height, width, 3)

    def _open(self, source: ImageSource) -> "PILImage.Image":
        from PIL import Image

        if isinstance(source, Image.Image):
            return source
        if isinstance(source, (bytes, bytearray, memoryview)):
            return Image.open(io.BytesIO(bytes(source)))
        if isinstance(source, str) and "://" in source:
            # URLs are fetched by the service through its guard (service.store.fetch) and stored first.
            raise _ImageRejected("URLs are not fetched by the encoder; pass a file path or bytes")
        if isinstance(source, (str, os.PathLike)):
            return Image.open(Path(source))
        raise TypeError(f"unsupported image source type {type(source).__name__}")

    def _to_rgb(self, image: "PILImage.Image") -> "PILImage.Image":
        from PIL import ImageOps

        width, height = image.size
        # Checked on the header, before the pixels are decoded (decompression bombs).
        if width * height > self._max_image_pixels:
            raise _ImageRejected(
                f"image is {width}x{height} = {width * height} pixels, "
                f"above max_image_pixels={self._max_image_pixels}"
            )
        # Phone photos store their rotation in EXIF; embed what a viewer would show.
        if image.getexif().get(0x0112, 1) != 1:
            image = ImageOps.exif_transpose(image)
        # convert() forces a full decode, so truncated files fail here, inside the worker.
        return image.convert("RGB")


def _split_preprocess(preprocess: Any) -> tuple[Any, tuple[Any, Any] | None]:
    """Split open_clip's inference transform at ``ToTensor``: (PIL steps, Normalize mean/std).

    Returns ``(None, None)`` for a transform of another shape; it then runs whole in the workers.
    """
    try:
        from torchvision.transforms import Compose, Normalize, ToTensor
    except ImportError:  # pragma: no cover - open_clip itself needs torchvision
        return None, None
    steps = list(getattr(preprocess, "transforms", None) or ())
    at = next((k for k, step in enumerate(steps) if isinstance(step, ToTensor)), None)
    if at is None:
        return None, None
    rest = steps[at + 1 :]
    if not rest:
        return Compose(steps[:at]), None
    if len(rest) == 1 and isinstance(rest[0], Normalize):
        return Compose(steps[:at]), (tuple(rest[0].mean), tuple(rest[0].std))
    return None, None


class _ImageRejected(ValueError):
    """An image was refused by a policy check (size), as opposed to failing to decode."""


def load_clip_encoder(settings: "Settings", *, path: str | Path | None = None, name: str | None = None) -> ClipEncoder:
    """Load the CLIP model from ``clip_model`` and ``clip_pretrained``.

    ``path``: a fine-tune of that model (a state dict file) to load instead of the weights
    ``clip_pretrained`` names; the tag's preprocessing (mean, std, quick GELU) still applies, as
    the fine-tune was trained with it. ``name``: the encoder's name (default ``model/label``).

    ``clip_model`` is an open_clip model name (``ViT-B-32``) or a path to a JSON model config
    (``{"embed_dim", "vision_cfg", "text_cfg"}``), registered with ``open_clip.add_model_config``
    under the file's stem. ``clip_pretrained`` is an open_clip pretrained tag, a local checkpoint
    file, or :data:`RANDOM_INIT_FOR_TESTS` (random weights; tests and benchmarks only).

    Raises:
        EncoderUnavailable: CLIP is disabled, the config is bad, or the weights cannot be loaded.
            There is never a fallback to random weights.
    """
    if not settings.clip_enabled:
        raise EncoderUnavailable("CLIP is disabled (RECSYS_CLIP_ENABLED=false)")
    device = resolve_device(settings.device)

    import open_clip
    import torch

    model_spec = settings.clip_model.strip()
    pretrained = settings.clip_pretrained.strip()
    if model_spec.lower().endswith(".json"):
        config_path = Path(model_spec).expanduser()
        if not config_path.is_file():
            raise EncoderUnavailable(f"CLIP model config {config_path} does not exist")
        model_name = _register_config_file(config_path)
    elif ":" in model_spec:
        # open_clip's hf-hub:/local-dir: schemas bring their own weights and ignore clip_pretrained.
        raise EncoderUnavailable(
            f"CLIP model {model_spec!r}: schema prefixes are not supported; use an open_clip model "
            "name or a JSON model config path, with RECSYS_CLIP_PRETRAINED naming the weights"
        )
    else:
        model_name = model_spec.replace("/", "-")  # open_clip's own normalisation
        if open_clip.get_model_config(model_name) is None:
            raise EncoderUnavailable(
                f"unknown CLIP model {model_spec!r}: use an open_clip model name "
                "(open_clip.list_models()) or a path to a JSON model config"
            )

    create_kwargs: dict[str, Any] = {}
    checkpoint: str | None = None
    label = pretrained
    if path is not None and not Path(path).is_file():
        raise EncoderUnavailable(f"CLIP weights {path} do not exist")
    if pretrained == RANDOM_INIT_FOR_TESTS:
        if path is None:
            log.warning(
                "CLIP %s uses RANDOM weights (clip_pretrained=%s): its vectors are meaningless; "
                "tests and benchmarks only",
                model_name,
                RANDOM_INIT_FOR_TESTS,
            )
    elif pretrained and Path(pretrained).expanduser().is_file():
        checkpoint = str(Path(pretrained).expanduser())
        label = Path(checkpoint).name
    elif pretrained and open_clip.get_pretrained_cfg(model_name, pretrained):
        # A fine-tune (path) needs the tag's settings below, not its weights.
        checkpoint = _resolve_tag(model_name, pretrained) if path is None else None
        # We hand open_clip a file path, so pass on what the tag would have set itself.
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        for key, kwarg in (
            ("mean", "image_mean"),
            ("std", "image_std"),
            ("interpolation", "image_interpolation"),
            ("resize_mode", "image_resize_mode"),
        ):
            if key in tag_cfg:
                create_kwargs[kwarg] = tag_cfg[key]
        if tag_cfg.get("quick_gelu"):
            create_kwargs["force_quick_gelu"] = True
    else:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise EncoderUnavailable(
            f"CLIP weights {pretrained!r} for {model_name} are neither a local checkpoint file nor a "
            f"known pretrained tag (tags: {', '.join(tags) or 'none'}): set RECSYS_CLIP_PRETRAINED "
            "to a local checkpoint path, or RECSYS_CLIP_ENABLED=false to silence this"
        )

    if path is not None:
        checkpoint, label = str(path), Path(path).name
    if checkpoint is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_RANDOM_INIT_SEED)
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=None, device="cpu", **create_kwargs
            )
    else:
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=checkpoint, device="cpu", **create_kwargs
            )
        except (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError) as exc:
            # Unreadable file, not a state dict, or keys/shapes that do not fit the architecture.
            raise EncoderUnavailable(
                f"CLIP weights for {model_name}/{label} could not be loaded from {checkpoint}: {exc}"
            ) from exc
    model.eval()

    model_cfg = open_clip.get_model_config(model_name)
    dim = int(model_cfg["embed_dim"])
    raw_size = model.visual.image_size
    image_size: int | tuple[int, int] = (
        int(raw_size[0]) if isinstance(raw_size, (tuple, list)) and raw_size[0] == raw_size[1] else raw_size
    )
    revision = _weights_digest(
        model,
        {
            "model_cfg": model_cfg,
            "preprocess": getattr(model.visual, "preprocess_cfg", None),
            "quick_gelu": create_kwargs.get("force_quick_gelu", False),
        },
    )
    model.to(device)
    if _is_cuda(device):
        model.half()
    tokenizer = open_clip.get_tokenizer(model_name)
    name = name or f"{model_name}/{label}"
    log.info("CLIP encoder %s (revision %s) on %s", name, revision, device)
    return ClipEncoder(
        model,
        preprocess,
        tokenizer,
        name=name,
        revision=revision,
        dim=dim,
        image_size=image_size,
        device=device,
        batch_size=settings.encode_batch_size,
        image_workers=settings.image_workers,
        max_image_pixels=settings.max_image_pixels,
    )


__all__ = ["ClipEncoder", "load_clip_encoder"]
