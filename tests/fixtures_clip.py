"""A tiny open_clip model for tests: a JSON config and a checkpoint, written on demand.

Loading it through the service (``service.vectors.clip_encoder``)::

    cfg = write_tiny_clip_config(tmp_path)
    ckpt = write_tiny_clip_checkpoint(tmp_path, cfg)
    settings = load_settings({"clip_model": str(cfg), "clip_pretrained": str(ckpt)}, environ={})
    encoder = load_clip_encoder(settings)      # 32-dim vectors, 32x32 input images

The model has the real CLIP architecture (ViT image tower, transformer text tower, the standard
49408-token BPE vocabulary) but is small enough to build and run in well under a second on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import service  # noqa: F401 - installs the torchvision hook before open_clip is imported

TINY_CLIP_NAME = "recsys-tiny-clip"
TINY_CLIP_DIM = 32
TINY_CLIP_IMAGE_SIZE = 32

TINY_CLIP_CONFIG = {
    "embed_dim": TINY_CLIP_DIM,
    "vision_cfg": {
        "image_size": TINY_CLIP_IMAGE_SIZE,
        "layers": 2,
        "width": 64,
        "head_width": 32,
        "patch_size": 16,
    },
    "text_cfg": {
        "context_length": 77,
        "vocab_size": 49408,
        "width": 64,
        "heads": 2,
        "layers": 2,
    },
}


def write_tiny_clip_config(directory: str | Path) -> Path:
    """Write the tiny model's open_clip config as ``<directory>/recsys-tiny-clip.json``."""
    path = Path(directory) / f"{TINY_CLIP_NAME}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(TINY_CLIP_CONFIG, indent=2))
    return path


def build_tiny_clip_model(config_path: str | Path, *, seed: int = 1234):
    """Build the model described by ``config_path`` with seeded random weights (eval mode, CPU)."""
    import open_clip
    import torch

    config_path = Path(config_path)
    if open_clip.get_model_config(config_path.stem) is None:
        open_clip.add_model_config(config_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(config_path.stem, pretrained=None, device="cpu")
    return model.eval()


def write_tiny_clip_checkpoint(directory: str | Path, config_path: str | Path, *, seed: int = 1234) -> Path:
    """Save ``build_tiny_clip_model(config_path, seed=seed)``'s state dict; return the file path.

    The file is a plain ``torch.save`` of the state dict, which ``open_clip.load_checkpoint``
    (and so ``create_model(..., pretrained=<path>)``) reads.
    """
    import torch

    path = Path(directory) / f"{Path(config_path).stem}-seed{seed}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(build_tiny_clip_model(config_path, seed=seed).state_dict(), path)
    return path
