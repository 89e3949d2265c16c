"""Print the project's requirements for the GPU image: faiss-gpu-cu12 (extra ``gpu``) in place of faiss-cpu.

faiss-cpu and faiss-gpu-cu12 install the same ``faiss`` package, so they cannot live side by side
(uninstalling one afterwards deletes files of the other). docker/Dockerfile.gpu installs these
requirements, then the project itself with ``--no-deps``::

    python docker/gpu_requirements.py pyproject.toml > requirements-gpu.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def _name(requirement: str) -> str:
    """Normalised distribution name of a PEP 508 requirement (``faiss_cpu>=1.8`` -> ``faiss-cpu``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def gpu_requirements(pyproject: Path) -> list[str]:
    """The ``[project] dependencies`` without faiss-cpu, plus the ``gpu`` extra."""
    project = tomllib.loads(Path(pyproject).read_text())["project"]
    gpu = project.get("optional-dependencies", {}).get("gpu", [])
    if not any(_name(r).startswith("faiss-gpu") for r in gpu):
        raise ValueError(f"{pyproject}: the gpu extra names no faiss-gpu package: {gpu}")
    return [r for r in project["dependencies"] if _name(r) != "faiss-cpu"] + list(gpu)


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "pyproject.toml")
    print("\n".join(gpu_requirements(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
