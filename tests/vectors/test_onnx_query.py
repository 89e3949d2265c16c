"""The query encoder exported to ONNX Runtime: equal to the torch fast path, checked before it ships,
and never confused with another encoder in the query cache. Real packaged MiniLM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer import query_export
from indexer.query_export import ExportSkipped, export_query_encoder
from service.settings import load_settings
from service.vectors.encoders import EncoderUnavailable
from service.vectors.onnx_query import load_onnx_query_encoder
from service.vectors.query_cache import QueryCache
from service.vectors.text_encoder import TextEncoder, load_text_encoder

pytestmark = pytest.mark.slow

# What a search bar may send: unicode, stray whitespace, control characters, one letter, and
# texts past the model's 256-token limit (truncated alike on both paths).
ODD = ["cleaning suede footwear", "  spaced   out  ", "Ünïcödé café naïve 東京 🙂", "x" * 3000, "word " * 400,
       "a", "CAPS Lock ON", "tab\there\nnewline", "c++ / c# & <b>html</b>", "12.5 kg 3/4\" bolt"]
CLUSTERED = ["trail running shoe", "waterproof hiking jacket", "chef's knife", "espresso machine",
             "yoga mat", "road bike helmet", "camping lantern", "wool socks"]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return load_text_encoder(load_settings({"device": "cpu"}, environ={}))


@pytest.fixture(scope="module")
def space(encoder) -> np.ndarray:
    texts = [f"{a} {b}" for a in CLUSTERED for b in ("for beginners", "professional grade", "lightweight", "budget")]
    return encoder.encode(texts)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, encoder, space) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for backend in ("onnx", "onnx-int8"):
        section = export_query_encoder(encoder, root / backend, backend=backend, probes=CLUSTERED + ODD,
                                       space_vectors=space, recall_floor=0.5)
        out[backend] = (root / backend, section)
    return out


def test_fp32_export_gives_the_torch_vectors_and_token_ids(encoder, exported):
    folder, section = exported["onnx"]
    onnx = load_onnx_query_encoder(folder, threads=1)
    for text in ODD:
        ids = encoder.model.preprocess([text])["input_ids"][0].tolist()
        assert onnx._tokenizer.encode(text).ids == ids, text
        np.testing.assert_allclose(onnx.encode_query(text), encoder.encode_query(text), atol=2e-6)
        assert onnx.encode_query(text).dtype == np.float32
    assert section["agreement"]["min_cosine"] >= query_export.FP32_MIN_COSINE
    assert section["agreement"]["top10_agreement"] == 1.0
    assert section["source"] == {"name": encoder.name, "revision": encoder.revision}
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "tokenizer.json", "query_encoder.json"}


def test_int8_export_is_close_and_measured(encoder, exported):
    folder, section = exported["onnx-int8"]
    onnx = load_onnx_query_encoder(folder, threads=1)
    cos = [float(onnx.encode_query(t) @ encoder.encode_query(t)) for t in CLUSTERED]
    assert min(cos) > 0.95 and section["agreement"]["min_cosine"] < 1.0 - 1e-6
    # Smaller: the MatMul weights are int8 (the 47 MB token embedding table stays fp32).
    assert (folder / "model.onnx").stat().st_size < 0.7 * (exported["onnx"][0] / "model.onnx").stat().st_size


def test_the_cache_never_serves_a_vector_of_another_backend(encoder, exported):
    fp32 = load_onnx_query_encoder(exported["onnx"][0])
    int8 = load_onnx_query_encoder(exported["onnx-int8"][0])
    assert len({encoder.revision, fp32.revision, int8.revision}) == 3
    cache = QueryCache(16)
    got = {name: cache.wrap("text", enc, enc.encode_query)("yoga mat")
           for name, enc in (("torch", encoder), ("onnx", fp32), ("int8", int8))}
    assert len(cache) == 3
    np.testing.assert_array_equal(got["int8"], int8.encode_query("yoga mat"))
    assert not np.array_equal(got["int8"], got["onnx"])
    assert cache.wrap("text", int8, int8.encode_query)("yoga mat") is got["int8"]


def test_an_export_that_disagrees_with_torch_is_not_shipped(encoder, space, tmp_path, monkeypatch):
    import torch

    real = query_export._export_graph

    def perturbed(model, inputs, path):  # a broken exporter: the graph's weights are off
        weight = model[0].auto_model.embeddings.word_embeddings.weight
        saved = weight.detach().clone()
        with torch.no_grad():
            weight.add_(0.05 * torch.randn_like(weight))
        try:
            real(model, inputs, path)
        finally:
            with torch.no_grad():
                weight.copy_(saved)

    monkeypatch.setattr(query_export, "_export_graph", perturbed)
    with pytest.raises(ExportSkipped, match="disagrees"):
        export_query_encoder(encoder, tmp_path / "q", backend="onnx", probes=CLUSTERED, space_vectors=space)
    assert not (tmp_path / "q").exists()
    np.testing.assert_allclose(np.linalg.norm(encoder.encode_query("yoga mat")), 1.0, atol=1e-5)  # restored


def test_int8_below_the_recall_floor_is_not_shipped(encoder, space, tmp_path):
    with pytest.raises(ExportSkipped, match="recall_floor"):
        export_query_encoder(encoder, tmp_path / "q", backend="onnx-int8", probes=CLUSTERED + ODD,
                             space_vectors=space, recall_floor=1.0 + 1e-9)
    assert not (tmp_path / "q").exists()


def test_what_cannot_be_exported_says_why(tmp_path):
    class NotAModel:
        name, revision, dim = "fake", "r", 8

    with pytest.raises(ExportSkipped, match="not a sentence-transformers model"):
        export_query_encoder(NotAModel(), tmp_path / "q", backend="onnx", probes=["x"])
    with pytest.raises(ValueError):
        export_query_encoder(NotAModel(), tmp_path / "q", backend="torch", probes=["x"])


def test_a_broken_folder_is_encoder_unavailable(exported, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(exported["onnx"][0], broken)
    (broken / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(EncoderUnavailable, match="cannot be loaded"):
        load_onnx_query_encoder(broken)
    (broken / "query_encoder.json").write_text("{")
    with pytest.raises(EncoderUnavailable, match="unreadable"):
        load_onnx_query_encoder(broken)
    # Well-formed JSON with hostile fields: wrong types, a path for the model, a huge length.
    import json

    good = json.loads((exported["onnx"][0] / "query_encoder.json").read_text())
    for bad in ({"source": ["not", "an", "object"]}, {"inputs": "input_ids"}, {"inputs": ["pixel_values"]},
                {"max_seq_length": 10**12}, {"max_seq_length": "nan"}, {"dim": None}):
        (broken / "query_encoder.json").write_text(json.dumps({**good, **bad}))
        with pytest.raises(EncoderUnavailable, match="unreadable"):
            load_onnx_query_encoder(broken)
    shutil.copy(exported["onnx"][0] / "model.onnx", broken / "model.onnx")
    (broken / "query_encoder.json").write_text(json.dumps({**good, "model_file": "../../etc/passwd"}))
    with pytest.raises(EncoderUnavailable, match="cannot be loaded"):  # only a name inside the folder is read
        load_onnx_query_encoder(broken)
