"""The torchvision fix works for every entry point: a fresh interpreter that imports `service` first."""

import subprocess
import sys

import pytest


@pytest.mark.slow  # a fresh interpreter loading torch each time
@pytest.mark.parametrize(
    "statement",
    [
        "import torchvision; from torchvision import transforms; transforms.Resize(32)",
        "import open_clip; open_clip.list_models()",
        "from sentence_transformers import SentenceTransformer",
    ],
)
def test_heavy_imports_work_after_importing_service(statement):
    code = f"import service; {statement}; from service._compat import torchvision_mode; print(torchvision_mode())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # "stub" on CPU-only torch with a CUDA torchvision wheel, "native" where its library loads.
    assert out.stdout.strip().splitlines()[-1] in {"stub", "native", "preregistered"}


def test_importing_service_does_not_import_torch():
    code = "import sys, service, service.settings, service.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_importing_the_encoder_modules_does_not_import_torch():
    # torch, open_clip and sentence-transformers load inside the load_* functions only.
    code = (
        "import sys, service.vectors.encoders, service.vectors.model_files, "
        "service.vectors.text_encoder, service.vectors.clip_encoder; "
        "print(sorted(m for m in ('torch', 'open_clip', 'sentence_transformers', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
