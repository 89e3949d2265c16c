"""What the text and image encoders share: the error type, device choice, hub checks, digests.

Both encoders, a sentence-transformers text model (:mod:`service.vectors.text_encoder`) and
open_clip's two towers (:mod:`service.vectors.clip_encoder`), produce float32, L2-normalised
vectors so an inner-product index ranks by cosine. Every encoder carries a ``revision``: a short
digest of the weights (and of what shapes the vectors: pooling, preprocessing), computed once at
load time. Callers use ``(name, revision)`` as the cache key so vectors from different weights
never mix.

Nothing heavy is imported at module import: torch, open_clip and sentence-transformers load inside
the ``load_*`` functions. Importing this module imports the ``service`` package first, which
installs the torchvision hook that open_clip and transformers need on CPU-only torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from PIL import Image as PILImage

# The packaged default text model and the name it is published under.
DEFAULT_TEXT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

# !!! TESTS AND BENCHMARKS ONLY !!!
# ``clip_pretrained`` set to this exact value builds the CLIP model with RANDOM weights (seeded, so
# they are the same on every run). Its vectors carry no meaning: never use it in a deployment.
# It exists so tests and throughput benchmarks can run the real architecture without downloading
# weights. Any other value that cannot be loaded raises EncoderUnavailable; there is no silent
# fallback to random weights.
RANDOM_INIT_FOR_TESTS = "random-init-for-tests"

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, "PILImage.Image"]


class EncoderUnavailable(RuntimeError):
    """An encoder cannot be loaded as configured (weights missing, no network, disabled, bad config)."""


# --------------------------------------------------------------------------------------------------
# Shared helpers


def resolve_device(setting: str) -> str:
    """Turn the ``device`` setting into a torch device string ("auto" = cuda when available).

    Raises:
        EncoderUnavailable: a CUDA device was asked for but torch sees none.
    """
    import torch

    value = (setting or "auto").strip().lower()
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value.startswith("cuda") and not torch.cuda.is_available():
        raise EncoderUnavailable(
            f"device {setting!r} requested but torch sees no CUDA device "
            "(set RECSYS_DEVICE=cpu or auto)"
        )
    return value


def _is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def _hub_offline() -> bool:
    """Whether the Hugging Face hub must not be contacted (env read now, not at import)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _hub_reachable(timeout_s: float = 3.0) -> str | None:
    """None when the hub's host accepts a TCP connection, else why not.

    huggingface_hub retries for ~45 s before giving up on a machine without network; one quick
    connection attempt tells the same thing in at most ``timeout_s``.
    """
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except ImportError:
        endpoint = "https://huggingface.co"
    parsed = urlparse(endpoint)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"{parsed.hostname} unreachable: {exc}"


def _weights_digest(module: "torch.nn.Module", extra: dict[str, Any]) -> str:
    """Short sha256 over every tensor of ``module`` plus ``extra`` (JSON): identifies the weights."""
    import torch

    h = hashlib.sha256()
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        # Viewing as bytes works for every dtype (bfloat16 has no numpy equivalent).
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _l2_normalise_f32(x: "torch.Tensor") -> np.ndarray:
    """Cast to float32 before normalising: fp16 norms are off by ~1e-3."""
    import torch.nn.functional as F

    return F.normalize(x.float(), p=2, dim=-1).cpu().numpy()


__all__ = [
    "DEFAULT_TEXT_MODEL_NAME",
    "EncoderUnavailable",
    "ImageSource",
    "RANDOM_INIT_FOR_TESTS",
    "resolve_device",
]
