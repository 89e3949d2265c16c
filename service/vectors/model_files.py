"""Finding CLIP model files on disk: JSON model configs and pretrained tags' checkpoints.

Offline use. ``load_clip_encoder`` looks for a pretrained tag's checkpoint in the local caches
before it touches the network; with ``HF_HUB_OFFLINE=1`` set it never does, and fails at once
when nothing is cached. Without that variable, a machine with no network spends about 45 s in
huggingface_hub's retries before the failure is reported.

Nothing heavy is imported at module import: open_clip and huggingface_hub load inside the functions.
"""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from typing import Any

from service.vectors.encoders import EncoderUnavailable, _hub_offline, _hub_reachable


def _register_config_file(path: Path) -> str:
    """Register a JSON open_clip model config with ``open_clip.add_model_config``; return its name.

    The name is the file's stem (open_clip's convention). A stem that shadows a different built-in
    config is refused: registration is process-wide.
    """
    import open_clip

    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EncoderUnavailable(f"CLIP model config {path} cannot be read: {exc}") from exc
    if not isinstance(cfg, dict) or not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise EncoderUnavailable(
            f"CLIP model config {path} must be a JSON object with embed_dim, vision_cfg and text_cfg"
        )
    name = path.stem
    existing = open_clip.get_model_config(name)
    if existing is not None and existing != cfg:
        raise EncoderUnavailable(
            f"CLIP model config {path}: the name {name!r} is already registered with a different "
            "config (a built-in model?); rename the file"
        )
    if existing is None:
        open_clip.add_model_config(path)
    return name


def _cached_tag_checkpoint(pretrained_cfg: dict[str, Any]) -> str | None:
    """The local file for a pretrained tag if a previous download left it in a cache, else None."""
    hub = pretrained_cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo_id, filename = os.path.split(hub)
            filename = filename or "open_clip_pytorch_model.bin"
            # Same preference as open_clip.pretrained.download_pretrained_from_hf: safetensors first.
            candidates = []
            if filename == "open_clip_pytorch_model.bin":
                candidates.append("open_clip_model.safetensors")
            elif filename.endswith((".bin", ".pth")):
                candidates.append(filename[:-4] + ".safetensors")
            candidates.append(filename)
            for candidate in candidates:
                found = try_to_load_from_cache(repo_id, candidate, cache_dir=os.environ.get("HF_HUB_CACHE"))
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    url = pretrained_cfg.get("url", "")
    if url:
        local = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if local.is_file():
            return str(local)
    return None


def _resolve_tag(model_name: str, tag: str) -> str:
    """Local checkpoint path for an open_clip pretrained tag: cache first, then download."""
    import open_clip
    from open_clip.pretrained import download_pretrained

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if cfg.get("file"):
        return cfg["file"]
    cached = _cached_tag_checkpoint(cfg)
    if cached:
        return cached
    hint = (
        "set RECSYS_CLIP_PRETRAINED to a local checkpoint path, "
        "or RECSYS_CLIP_ENABLED=false to silence this"
    )
    if _hub_offline():
        raise EncoderUnavailable(
            f"CLIP weights for {model_name}/{tag} could not be loaded (not in the local cache, and "
            f"HF_HUB_OFFLINE is set): {hint}"
        )
    unreachable = _hub_reachable()
    if unreachable:
        raise EncoderUnavailable(
            f"CLIP weights for {model_name}/{tag} could not be loaded (not in the local cache, and "
            f"{unreachable}): {hint}"
        )
    try:
        path = download_pretrained(cfg)
    except (OSError, RuntimeError, http.client.HTTPException) as exc:
        # OSError covers URLError, timeouts and huggingface_hub's wrapped FileNotFoundError;
        # RuntimeError is open_clip's checksum mismatch or missing huggingface_hub package.
        raise EncoderUnavailable(
            f"CLIP weights for {model_name}/{tag} could not be loaded (no network?): {hint} ({exc})"
        ) from exc
    if not path:
        raise EncoderUnavailable(f"CLIP weights for {model_name}/{tag}: no download source known; {hint}")
    return path
