"""Make ``import torchvision`` work on CPU-only torch builds.

The only torchvision wheels on the package registry are CUDA builds. Installed beside the CPU
build of the matching torch, their compiled library ``torchvision/_C.so`` fails to load, and
``import torchvision`` then raises ``operator torchvision::nms does not exist`` because its
Python side registers fake kernels for ``nms``/``qnms`` unconditionally. open_clip and
sentence-transformers (through transformers) import torchvision, so both break too.

The fix, applied once and lazily: a ``sys.meta_path`` hook that runs the first time anything
imports torchvision. It tries to load the compiled library the way torchvision would; only if
that fails does it define the two operator *schemas* (no kernels), which is all the import needs.
torchvision's transforms (what we use) are pure Python and unaffected; its compiled detection ops
(nms, roi_align) stay unavailable, exactly as torchvision itself reports with ``_has_ops()``.

Installing the hook costs nothing: torch is only imported when torchvision is.
"""

from __future__ import annotations

import glob
import importlib.abc
import importlib.util
import logging
import os
import sys

log = logging.getLogger(__name__)

# Schemas copied from torchvision/csrc/ops/nms.cpp and quantized/cpu/qnms_kernel.cpp.
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_state: dict[str, object] = {}


def _prepare_torchvision(origin: str) -> None:
    """Load torchvision's compiled ops, or register stub schemas when they cannot load."""
    import torch

    package_dir = os.path.dirname(origin)
    for path in glob.glob(os.path.join(package_dir, "_C*.so")) + glob.glob(
        os.path.join(package_dir, "_C*.pyd")
    ):
        try:
            torch.ops.load_library(path)
            _state["mode"] = "native"
            return
        except (OSError, RuntimeError):
            continue
    try:
        torch.ops.torchvision.nms  # noqa: B018 - registered by someone else already
        _state["mode"] = "preregistered"
        return
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        lib.define(schema)
    _state["library"] = lib  # keep alive: the registration dies with the object
    _state["mode"] = "stub"
    log.debug("torchvision compiled ops unavailable; registered stub schemas")


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    """Run :func:`_prepare_torchvision` just before torchvision is first imported."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: D102
        if fullname != "torchvision" or "mode" in _state:
            return None
        # Step aside so the normal finders locate the real package.
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torchvision")
        if spec is not None and spec.origin:
            _prepare_torchvision(spec.origin)
        return spec


def install() -> None:
    """Install the import hook (idempotent). Handles an already-imported torchvision too."""
    if "mode" in _state or any(isinstance(f, _TorchvisionFinder) for f in sys.meta_path):
        return
    if "torchvision" in sys.modules:
        _state["mode"] = "already-imported"
        return
    sys.meta_path.insert(0, _TorchvisionFinder())


def torchvision_mode() -> str | None:
    """How torchvision's ops were provided: native, stub, preregistered, or None if not yet."""
    return _state.get("mode")  # type: ignore[return-value]
