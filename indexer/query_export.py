"""Export stage: the text space's query encoder as an ONNX model the service runs without torch.

One search-bar query through torch costs ~7 ms on one CPU thread, mostly per-operator overhead
on a handful of tokens; the same graph in ONNX Runtime costs ~3 ms with vectors equal to 1e-7,
and ~1.3 ms with int8 weights (cosine ~0.99 to fp32). The rebuild exports the very encoder the
space was built with (packaged or fine-tuned) into the version's ``query_encoder/`` folder, so
the files are checksummed, uploaded, rolled back and garbage-collected with the index they
belong to; the service uses them when ``query_backend`` asks for that backend.

Nothing is trusted on faith: the exported graph answers the same query-like probes as the torch
encoder and is kept only when it agrees (fp32: every cosine >= ``FP32_MIN_COSINE``; int8: top-10
agreement on the exact neighbours >= ``recall_floor``). Otherwise the stage records why and the
service keeps encoding queries with torch.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from service.settings import QUERY_BACKENDS as BACKENDS
from service.vectors.onnx_query import META_FILE
from service.vectors.text_encoder import TextEncoder

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
# An fp32 export computes the same function; anything further apart is a broken export.
FP32_MIN_COSINE = 0.9999
# Exact neighbours for the int8 agreement check are found among at most this many probes.
AGREEMENT_PROBES = 200


class ExportSkipped(RuntimeError):
    """The encoder cannot be exported (or its export disagrees): queries stay on torch."""


def _model_inputs(model: Any) -> list[str]:
    features = model.preprocess(["probe"]) if hasattr(model, "preprocess") else model.tokenize(["probe"])
    return [k for k, v in features.items() if hasattr(v, "dtype") and k != "prompt_length"]


def _check_exportable(model: Any) -> dict[str, Any]:
    """What the runtime needs to reproduce the model's input side, or ExportSkipped."""
    modules = [type(m).__name__ for m in model]
    if not modules or modules[0] != "Transformer" or set(modules[1:]) - {"Pooling", "Normalize", "Dense"}:
        raise ExportSkipped(f"module stack {modules} is not Transformer + Pooling/Dense/Normalize")
    tokenizer = getattr(model, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportSkipped("the tokenizer is not a fast (Rust) tokenizer")
    if getattr(model, "default_prompt_name", None):
        raise ExportSkipped("the model prepends a default prompt")
    first = model[0]
    config = getattr(first, "config", None)
    lower = bool(getattr(first, "do_lower_case", False) or getattr(config, "do_lower_case", False))
    return {"modules": modules, "max_seq_length": int(model.max_seq_length), "do_lower_case": lower,
            "inputs": _model_inputs(model)}


def _export_graph(model: Any, inputs: list[str], path: Path) -> None:
    import torch

    class Graph(torch.nn.Module):
        """The module stack as a function of the tokenizer's tensors (names in ``inputs`` order)."""

        def __init__(self, st: Any):
            super().__init__()
            self.st = st

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.st(dict(zip(inputs, tensors)))["sentence_embedding"]

    features = model.preprocess(["an example query to trace"]) if hasattr(model, "preprocess") \
        else model.tokenize(["an example query to trace"])
    args = tuple(features[k].to("cpu") for k in inputs)
    axes = {k: {0: "batch", 1: "tokens"} for k in inputs}
    # The TorchScript exporter: no onnxscript needed, and it takes this module stack as is. Its
    # tracer warns about Python conditionals on shapes; the agreement check is what tells.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Graph(model).eval(), args, str(path), input_names=inputs, output_names=["embedding"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel int8 weights of the MatMuls only: cosine ~0.994 to fp32 where quantizing every
    # op measured ~0.968 (benchmarks/bench_query_encode.py).
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"])


def export_query_encoder(encoder: Any, folder: Path, *, backend: str, probes: Sequence[str],
                         space_vectors: np.ndarray | None = None, recall_floor: float = 0.95) -> dict[str, Any]:
    """Export ``encoder`` (a TextEncoder on a sentence-transformers model) for ``backend`` into
    ``folder`` and check it against the torch encoder on ``probes``; the manifest section
    (without its files).

    Raises:
        ExportSkipped: the model cannot be exported, or the export does not agree with torch.
    """
    if backend not in BACKENDS or backend == "torch":
        raise ValueError(f"no export for query backend {backend!r}")
    model = getattr(encoder, "model", None)
    if model is None or not hasattr(model, "max_seq_length"):
        raise ExportSkipped("the text encoder is not a sentence-transformers model")
    info = _check_exportable(model)
    probes = [p for p in probes if p][:AGREEMENT_PROBES]
    if not probes:
        raise ExportSkipped("no query-like probes to check the export against")
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    work = folder / "fp32.onnx"
    was_device = next(model.parameters()).device
    was_dtype = next(model.parameters()).dtype
    try:
        model.to("cpu").float()
        _export_graph(model, info["inputs"], work)
        # The reference: the torch fast path in fp32 on CPU, as a CPU service encodes (a GPU
        # builder's fp16 model would differ from both by ~1e-3).
        reference = _timed(TextEncoder(model, name=encoder.name, revision=encoder.revision, device="cpu").encode_query,
                           probes)
    except Exception as exc:  # noqa: BLE001 - the exporter fails in many ways (unsupported ops, tracing)
        shutil.rmtree(folder, ignore_errors=True)
        raise ExportSkipped(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    finally:
        model.to(was_device).to(was_dtype)
    if backend == "onnx-int8":
        try:
            _quantize(work, folder / MODEL_FILE)
        except Exception as exc:  # noqa: BLE001 - as the export: the service stays on torch
            shutil.rmtree(folder, ignore_errors=True)
            raise ExportSkipped(f"int8 quantization failed: {type(exc).__name__}: {exc}") from exc
        work.unlink()
    else:
        work.rename(folder / MODEL_FILE)
    model.tokenizer.backend_tokenizer.save(str(folder / TOKENIZER_FILE))
    meta = {"backend": backend, "source": {"name": encoder.name, "revision": encoder.revision}, "dim": int(encoder.dim),
            "model_file": MODEL_FILE, "tokenizer_file": TOKENIZER_FILE, **info}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    export_seconds = time.perf_counter() - started
    try:
        agreement = measure_agreement(reference, folder, probes, space_vectors, threads=1)
    except Exception as exc:  # noqa: BLE001 - a graph ORT cannot run is a failed export
        shutil.rmtree(folder, ignore_errors=True)
        raise ExportSkipped(f"the exported model does not run in ONNX Runtime: {type(exc).__name__}: {exc}") from exc
    if backend == "onnx" and agreement["min_cosine"] < FP32_MIN_COSINE:
        shutil.rmtree(folder, ignore_errors=True)
        raise ExportSkipped(f"the fp32 export disagrees with torch (min cosine {agreement['min_cosine']:.6f})")
    if backend == "onnx-int8" and agreement.get("top10_agreement", 1.0) < recall_floor:
        shutil.rmtree(folder, ignore_errors=True)
        raise ExportSkipped(f"int8 queries find {agreement['top10_agreement']:.3f} of fp32's exact top 10, "
                            f"below recall_floor {recall_floor}")
    log.info("query encoder exported for %s: min cosine %.6f, %.2f ms/query vs torch %.2f",
             backend, agreement["min_cosine"], agreement["onnx_ms_p50"], agreement["torch_ms_p50"])
    return {**meta, "agreement": agreement, "export_seconds": round(export_seconds, 3)}


def _timed(encode: Any, texts: Sequence[str]) -> tuple[np.ndarray, list[float]]:
    """``encode`` of each text (stacked) and the seconds each took."""
    vectors, seconds = [], []
    for text in texts:
        t0 = time.perf_counter()
        vectors.append(encode(text))
        seconds.append(time.perf_counter() - t0)
    return np.asarray(vectors, dtype=np.float32), seconds


def measure_agreement(reference: tuple[np.ndarray, list[float]], folder: Path, probes: Sequence[str],
                      space_vectors: np.ndarray | None, *, threads: int = 1) -> dict[str, Any]:
    """Cosine of the exported encoder's vector to the torch one (``reference``: vectors and seconds
    per probe) for every probe, single-query timings (median ms, one thread each), and, given the
    space's vectors, how much of each probe's exact top 10 (by the torch vector) the export finds."""
    from service.vectors.onnx_query import load_onnx_query_encoder

    onnx = load_onnx_query_encoder(folder, threads=threads)
    got_m, t_onnx = _timed(onnx.encode_query, probes)
    ref_m, t_torch = reference
    cos = (ref_m * got_m).sum(axis=1)
    out: dict[str, Any] = {"probes": len(probes), "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
                           "max_abs_diff": float(np.abs(ref_m - got_m).max()),
                           "torch_ms_p50": float(np.median(t_torch) * 1e3),
                           "onnx_ms_p50": float(np.median(t_onnx) * 1e3)}
    if space_vectors is not None and len(space_vectors):
        import faiss

        # faiss.knn scans the vectors in blocks: no (probes x items) matrix, whatever the size.
        k = min(10, len(space_vectors))
        base = np.ascontiguousarray(space_vectors, dtype=np.float32)
        _d, exact = faiss.knn(ref_m, base, k, metric=faiss.METRIC_INNER_PRODUCT)
        _d, found = faiss.knn(got_m, base, k, metric=faiss.METRIC_INNER_PRODUCT)
        out["top10_agreement"] = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(exact, found)]))
    return out


__all__ = ["BACKENDS", "ExportSkipped", "META_FILE", "export_query_encoder", "measure_agreement"]
