"""The text space's query encoder in ONNX Runtime: one search-bar query to a vector without torch.

The rebuild exports the encoder a version's text space was built with into the version's
``query_encoder/`` folder (:mod:`indexer.query_export`: graph, fast tokenizer, and a JSON file
saying how the model expects its input). Here the tokenizer (the Rust ``tokenizers`` library the
sentence-transformers model used) and the graph run directly: no torch, no batching machinery.

The encoder's ``revision`` is the source encoder's revision plus the backend, so the query cache
never hands an ONNX vector to a torch lookup or an int8 vector to an fp32 one.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from service.vectors.encoders import EncoderUnavailable

META_FILE = "query_encoder.json"


class OnnxQueryEncoder:
    """Tokenizer + ONNX graph of a sentence-transformers model; unit-norm float32 vectors."""

    def __init__(self, session: Any, tokenizer: Any, meta: dict[str, Any]):
        self._session = session
        self._tokenizer = tokenizer
        self._inputs = list(meta["inputs"])
        self._lower = bool(meta.get("do_lower_case"))
        self.backend = str(meta["backend"])
        self.name = str(meta["source"]["name"])
        self.source_revision = str(meta["source"]["revision"])
        # Keys the query cache: never equal to the torch encoder's (or the other backend's).
        self.revision = f"{self.source_revision}+{self.backend}"
        self.dim = int(meta["dim"])

    def encode_query(self, text: str) -> np.ndarray:
        """One query: float32, unit norm, shape ``(dim,)``."""
        enc = self._tokenizer.encode(text.lower() if self._lower else text)
        columns = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
        feed = {name: np.asarray([columns[name]], dtype=np.int64) for name in self._inputs}
        vector = np.asarray(self._session.run(None, feed)[0][0], dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector


def load_onnx_query_encoder(folder: Path, *, threads: int = 0) -> OnnxQueryEncoder:
    """The exported query encoder in ``folder``; ``threads``: ONNX Runtime's intra-op threads
    (0 = its default, one per core).

    Raises:
        EncoderUnavailable: files missing or malformed, or ONNX Runtime cannot load the graph.
    """
    folder = Path(folder)
    try:
        meta = json.loads((folder / META_FILE).read_text())
        model_file = folder / Path(str(meta["model_file"])).name  # a name inside the folder, never a path
        tokenizer_file = folder / Path(str(meta["tokenizer_file"])).name
        if not (isinstance(meta["inputs"], list) and set(meta["inputs"]) <= {"input_ids", "attention_mask",
                                                                              "token_type_ids"}):
            raise ValueError(f"unknown model inputs {meta['inputs']!r}")
        max_len = int(meta["max_seq_length"])
        if not 1 <= max_len <= 1 << 16 or not isinstance(meta["source"], dict):
            raise ValueError("max_seq_length out of range or source not an object")
        # Fails here, not on a request, when a field is missing or of the wrong type.
        encoder = OnnxQueryEncoder(None, None, meta)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EncoderUnavailable(f"query encoder in {folder} is unreadable: {exc}") from exc
    try:
        import onnxruntime as ort
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise EncoderUnavailable(f"the ONNX query encoder needs onnxruntime and tokenizers: {exc}") from exc
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        # As sentence-transformers calls it: one string, truncated to the model's length, no padding.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_len)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(0, int(threads))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT and tokenizers raise their own exception types
        raise EncoderUnavailable(f"query encoder in {folder} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    encoder._session, encoder._tokenizer = session, tokenizer
    return encoder


_LOADED: dict[tuple[str, int], OnnxQueryEncoder] = {}
_LOCK = threading.Lock()
_KEPT = 2


def shared_onnx_query_encoder(folder: Path, sha256: str, *, threads: int = 0) -> OnnxQueryEncoder:
    """:func:`load_onnx_query_encoder`, once per process per model checksum (versions that share
    an export share its session: a swap then loads nothing); the last two are kept (the served
    version's and the one being swapped in)."""
    key = (sha256 or str(folder), threads)
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
    encoder = load_onnx_query_encoder(folder, threads=threads)  # outside the lock: a load takes ~0.3 s
    with _LOCK:
        if key not in _LOADED:
            for old in list(_LOADED)[: max(0, len(_LOADED) - _KEPT + 1)]:
                del _LOADED[old]
            _LOADED[key] = encoder
        return _LOADED[key]


__all__ = ["OnnxQueryEncoder", "load_onnx_query_encoder", "shared_onnx_query_encoder"]
