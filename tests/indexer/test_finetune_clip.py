"""CLIP fine-tuning on the tiny open_clip config: it learns, writes loadable weights, resumes."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer.finetune_clip import ClipFinetuneReport, finetune_clip
from service.settings import load_settings
from service.vectors.clip_encoder import ClipEncoder, load_clip_encoder

try:  # tests/ as a package (a tests/__init__.py) or as a plain folder on sys.path
    from tests.fixtures_clip import write_tiny_clip_checkpoint, write_tiny_clip_config
except ImportError:  # pragma: no cover - depends on how pytest was started
    from fixtures_clip import write_tiny_clip_checkpoint, write_tiny_clip_config

# Each pattern has its own title: a checkerboard world where the right pairing is known.
PATTERNS: dict[str, tuple[int, int, int] | str] = {
    "a red square": (255, 0, 0),
    "a green square": (0, 160, 0),
    "a blue square": (0, 0, 255),
    "a yellow square": (255, 220, 0),
    "black and white horizontal stripes": "h",
    "black and white vertical stripes": "v",
    "a black and white checkerboard": "c",
    "a plain white square": (255, 255, 255),
}
TITLES = list(PATTERNS)


def _image(kind: tuple[int, int, int] | str, rng: np.random.Generator) -> Image.Image:
    pixels = np.zeros((32, 32, 3), np.float32)
    if isinstance(kind, tuple):
        pixels[:] = kind
    else:
        y, x = np.mgrid[:32, :32]
        mask = {"h": (y // 4) % 2, "v": (x // 4) % 2, "c": (x // 4 + y // 4) % 2}[kind]
        pixels[:] = (mask * 255)[..., None]
    # Noise makes every copy a different image of the same pattern.
    pixels += rng.normal(0, 12, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def make_pairs(copies: int, seed: int = 0) -> list[tuple[object, str]]:
    """``copies`` noisy images per pattern with its title; every other one as PNG bytes."""
    rng = np.random.default_rng(seed)
    pairs = []
    for title, kind in PATTERNS.items():
        for k in range(copies):
            image = _image(kind, rng)
            pairs.append((_png(image) if k % 2 else image, title))
    return pairs


def _settings(clip_model: Path, clip_pretrained: Path | str):
    return load_settings(
        {"device": "cpu", "clip_model": str(clip_model), "clip_pretrained": str(clip_pretrained), "image_workers": 2},
        environ={},
    )


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread: the model is tiny, and on a busy 2-core runner spinning OpenMP threads
    make each step several times slower and its time erratic."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tiny-clip")
    config = write_tiny_clip_config(directory)
    return config, write_tiny_clip_checkpoint(directory, config, seed=1234)


@pytest.fixture(scope="module")
def base(tiny_config) -> ClipEncoder:
    return load_clip_encoder(_settings(*tiny_config))


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory) -> tuple[ClipFinetuneReport, list, dict]:
    """Three epochs on 48 pairs; also the base weights as they were before training."""
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    pairs = make_pairs(copies=6)
    out = tmp_path_factory.mktemp("finetuned") / "clip-finetuned.pt"
    report = finetune_clip(
        base, pairs, out_path=out, epochs=3, batch_size=8, learning_rate=1e-3, valid_fraction=0.25, patience=3,
        progress=True,
    )
    return report, pairs, before


def _pair_scores(encoder: ClipEncoder, pairs: list) -> tuple[float, float]:
    """Mean cosine of each image with its own title, and top-1 accuracy of image -> title."""
    vectors, ok, errors = encoder.encode_images([image for image, _ in pairs])
    assert not errors and ok == list(range(len(pairs)))
    texts = encoder.encode_text([title for _, title in pairs])
    per_title = encoder.encode_text(TITLES)
    truth = np.array([TITLES.index(title) for _, title in pairs])
    accuracy = float(np.mean(np.argmax(vectors @ per_title.T, axis=1) == truth))
    return float(np.mean(np.sum(vectors * texts, axis=1))), accuracy


def test_training_lowers_held_out_loss_and_aligns_pairs(trained, base, tiny_config):
    report, pairs, _ = trained
    assert report.epochs_run == 3 and report.best_epoch >= 1
    assert len(report.valid_loss) == 4 and len(report.train_loss) == 3
    assert min(report.valid_loss[1:]) < report.valid_loss[0] - 0.3
    tuned = load_clip_encoder(_settings(tiny_config[0], report.out_path))
    base_cosine, base_accuracy = _pair_scores(base, pairs)
    tuned_cosine, tuned_accuracy = _pair_scores(tuned, pairs)
    assert tuned_cosine > base_cosine + 0.2
    assert tuned_accuracy > base_accuracy + 0.4


def test_written_checkpoint_loads_with_a_new_revision(trained, base, tiny_config):
    report, _, before = trained
    tuned = load_clip_encoder(_settings(tiny_config[0], report.out_path))
    assert tuned.name.endswith("/clip-finetuned.pt")
    assert tuned.dim == base.dim
    assert tuned.revision != base.revision
    assert not list(report.out_path.parent.glob("*.tmp"))
    # The caller's encoder is left as it was: its revision still names its weights.
    after = base.model.state_dict()
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)


def test_report_counts(trained):
    report, pairs, _ = trained
    assert report.pairs == len(pairs) == report.train_pairs + report.valid_pairs
    assert report.valid_pairs == 12 and report.skipped_images == 0 and report.image_errors == {}
    assert report.resumed_from_epoch == 0
    assert report.steps == 3 * 5  # 36 training pairs: batches of 8, 8, 8, 8 and 4
    assert report.pairs_per_second > 0 and report.seconds > 0
    assert report.peak_rss_mb is None or report.peak_rss_mb > 50


def test_resume_continues_where_it_stopped(base, tmp_path, caplog):
    pairs = make_pairs(copies=3, seed=1)
    kwargs = {"batch_size": 6, "learning_rate": 1e-3, "valid_fraction": 0.25, "patience": 5,
              "checkpoint_dir": tmp_path / "ckpt"}
    first = finetune_clip(base, pairs, out_path=tmp_path / "a.pt", epochs=1, **kwargs)
    assert first.epochs_run == 1 and first.steps == 3  # 18 training pairs in batches of 6
    assert (tmp_path / "ckpt" / "state.pt").is_file()

    with caplog.at_level(logging.INFO, logger="recsys.indexer"):
        second = finetune_clip(base, pairs, out_path=tmp_path / "b.pt", epochs=2, **kwargs)
    assert second.resumed_from_epoch == 1 and second.epochs_run == 2
    assert second.steps == first.steps  # epoch 2 only
    assert second.train_loss[0] == first.train_loss[0]
    assert second.valid_loss[:2] == first.valid_loss
    messages = [r.getMessage() for r in caplog.records]
    assert any("resuming after epoch 1" in m for m in messages)
    assert any("epoch 2/2" in m for m in messages) and not any("epoch 1/2" in m for m in messages)

    # Stopping and resuming trains exactly what one uninterrupted run does.
    straight = finetune_clip(base, pairs, out_path=tmp_path / "c.pt", epochs=2,
                             **{**kwargs, "checkpoint_dir": None})
    np.testing.assert_allclose(second.valid_loss, straight.valid_loss, rtol=1e-4)
    np.testing.assert_allclose(second.train_loss, straight.train_loss, rtol=1e-4)

    again = finetune_clip(base, pairs, out_path=tmp_path / "d.pt", epochs=2, **kwargs)
    assert again.steps == 0 and again.epochs_run == 2 and again.best_epoch == second.best_epoch

    with pytest.raises(ValueError, match="other pairs"):
        finetune_clip(base, pairs, out_path=tmp_path / "e.pt", epochs=3, **{**kwargs, "seed": 7})


def test_early_stopping_keeps_the_best_weights(trained, tiny_config, tmp_path):
    # Start from the fine-tuned weights (far better than chance), then wreck them with a huge
    # learning rate: the first epoch is worse, so training stops and the start weights stay best.
    start = load_clip_encoder(_settings(tiny_config[0], trained[0].out_path))
    report = finetune_clip(start, make_pairs(copies=3), out_path=tmp_path / "out.pt", epochs=4, batch_size=6,
                           learning_rate=1.0, weight_decay=0.0, valid_fraction=0.25, patience=1)
    assert report.valid_loss[1] > report.valid_loss[0]
    assert report.epochs_run == 1 and report.best_epoch == 0
    assert load_clip_encoder(_settings(tiny_config[0], report.out_path)).revision == start.revision


def test_bad_images_are_skipped_and_counted(base, tiny_config, tmp_path):
    pairs = make_pairs(copies=3)
    bad = {3: (b"not an image", "a red square"),
           7: (str(tmp_path / "missing.png"), "a blue square"),
           11: ("https://example.com/x.png", "a plain white square")}
    for i, pair in bad.items():
        pairs.insert(i, pair)
    out = tmp_path / "out.safetensors"
    report = finetune_clip(base, pairs, out_path=out, epochs=2, batch_size=6, learning_rate=1e-3,
                           valid_fraction=0.25, patience=2)
    assert report.skipped_images == 3 and sorted(report.image_errors) == sorted(bad)
    assert "URL" in report.image_errors[11]
    assert report.pairs == len(pairs) - 3 == 24
    # The safetensors format is chosen by suffix and loads the same way.
    assert report.best_epoch >= 1
    assert load_clip_encoder(_settings(tiny_config[0], out)).revision != base.revision


@pytest.mark.parametrize(
    ("pairs", "kwargs", "message"),
    [
        ([], {}, "got none"),
        (None, {"epochs": 0}, "epochs"),
        (None, {"batch_size": 0}, "batch_size"),
        (None, {"batch_size": 1}, "batch_size"),
        (None, {"valid_fraction": 0.0}, "valid_fraction"),
        (None, {"valid_fraction": 1.0}, "valid_fraction"),
        (None, {"patience": 0}, "patience"),
        (None, {"learning_rate": 0.0}, "learning_rate"),
        ([("img", 42)] * 4, {}, r"pairs\[0\]"),
        ([(b"junk", "t")] * 5 + [(Image.new("RGB", (32, 32)), "a black square")] * 3, {}, "at least 4"),
    ],
)
def test_bad_arguments_raise(base, tmp_path, pairs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        finetune_clip(base, make_pairs(copies=1) if pairs is None else pairs, out_path=tmp_path / "out.pt", **kwargs)
    assert not (tmp_path / "out.pt").exists()
