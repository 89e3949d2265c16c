"""What fine-tuning CLIP costs: pairs per second and peak memory of ``finetune_clip`` on real
ViT-B-32 architecture and JPEG thumbnails.

    python -m benchmarks.bench_finetune_clip [--model ViT-B-32] [--pairs 512] [--batch-size 32]
                                             [--epochs 1] [--device auto]

No package ships CLIP weights, so the model is built with seeded random weights
(``clip_pretrained=random-init-for-tests``): the same layers, sizes and arithmetic as the
laion2b weights, so time and memory are the same; the loss is not meaningful and is not reported
as a result. The pairs are ``--pairs`` distinct 256x256 JPEG thumbnails (seeded gradients and
noise, ~15 KB each, decoded and resized by the encoder's worker threads exactly as the
rebuild's pictures are) with short titles. The fit is the one ``recsys-indexer finetune`` runs
(:func:`indexer.finetune_clip.finetune_clip`: open_clip's contrastive loss, AdamW, a held-out
tenth scored before and after each epoch). On CUDA it trains under bf16 autocast. Writes
``benchmarks/results/finetune_clip_<device>.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, command_line, load_snapshot, machine_info, write_result

WORDS = ["red", "leather", "trail", "running", "shoe", "espresso", "machine", "linen", "shirt", "oak", "table",
         "ceramic", "mug", "wool", "scarf", "steel", "knife", "camping", "tent", "desk", "lamp"]


def make_thumbnails(folder: Path, count: int, seed: int = 0) -> list[tuple[Path, str]]:
    """``count`` distinct 256x256 JPEGs (a random two-colour gradient plus noise) with 3-word titles."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:256, :256] / 255.0
    pairs = []
    for i in range(count):
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (x * rng.uniform(0, 1) + y * rng.uniform(0, 1))[..., None] / 2
        pixels = a * (1 - t) + b * t + rng.normal(0, 10, (256, 256, 3))
        path = folder / f"thumb{i}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=85)
        pairs.append((path, " ".join(rng.choice(WORDS, 3))))
    return pairs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from indexer.finetune_clip import finetune_clip
    from service.settings import load_settings
    from service.vectors.clip_encoder import load_clip_encoder
    from service.vectors.encoders import RANDOM_INIT_FOR_TESTS

    settings = load_settings({"clip_model": args.model, "clip_pretrained": RANDOM_INIT_FOR_TESTS,
                              "device": args.device}, environ={})
    load_before = load_snapshot()
    encoder = load_clip_encoder(settings)
    with tempfile.TemporaryDirectory() as tmp:
        pairs = make_thumbnails(Path(tmp), args.pairs)
        jpeg_kb = float(np.median([p.stat().st_size for p, _t in pairs])) / 1024
        started = time.perf_counter()
        report = finetune_clip(encoder, pairs, out_path=Path(tmp) / "weights.pt", epochs=args.epochs,
                               batch_size=args.batch_size, learning_rate=1e-5, patience=args.epochs, progress=True)
        wall = time.perf_counter() - started
    device = str(encoder.device)
    result = {
        "command": command_line(), "machine": machine_info(), "load_before": load_before, "load_after": load_snapshot(),
        "model": args.model, "weights": "random init (same architecture and cost as pretrained weights)",
        "device": device, "precision": "bf16 autocast" if device.startswith("cuda") else "fp32",
        "pairs": report.pairs, "train_pairs": report.train_pairs, "valid_pairs": report.valid_pairs,
        "batch_size": args.batch_size, "epochs": report.epochs_run, "jpeg_median_kb": round(jpeg_kb, 1),
        "train_pairs_per_second": round(report.pairs_per_second, 2),
        "wall_seconds": round(wall, 1), "peak_rss_mb": report.peak_rss_mb,
    }
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"finetune_clip_{device.split(':')[0]}.json"
    write_result(out, result)
    print(f"{args.model} on {device}: {result['train_pairs_per_second']} training pairs/s "
          f"(batch {args.batch_size}, {report.train_pairs} pairs), wall {wall:.1f} s, peak RSS {report.peak_rss_mb:.0f} MB")
    return result


if __name__ == "__main__":
    main()
