"""Production packaging in docker/: the Dockerfiles, the compose files and .dockerignore.

No Docker engine and no network: the files are parsed and checked against the repository (paths
they copy, settings they set, commands they run), and the two small programs they ship
(docker/entrypoint.sh, docker/gpu_requirements.py) and the HEALTHCHECK command are run here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from service.settings import describe

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "gpu": DOCKER / "Dockerfile.gpu"}
COMPOSE = DOCKER / "compose.yaml"
COMPOSE_GPU = DOCKER / "compose.gpu.yaml"
SETTING_VARIABLES = {env for _name, env, _default in describe()}
RECSYS_VAR = re.compile(r"\bRECSYS_[A-Z0-9_]+\b")


# --- a small Dockerfile reader --------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise AssertionError(f"{self.path.name}: no stage {name!r} (stages: {[s.name for s in self.stages]})")

    def chain(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        names = {s.name for s in self.stages}
        out = [self.stage(name)]
        while out[-1].base in names:
            out.append(self.stage(out[-1].base))
        return out


def logical_lines(text: str) -> list[str]:
    """Instructions with line continuations joined; comments and blank lines dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also comments between continuation lines, which Docker ignores too
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        out.append((buf + stripped).strip())
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    return out


def parse_dockerfile(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(name=name, base=words[0]))
        elif not stages:
            assert keyword == "ARG", f"{path.name}: only ARG may come before the first FROM, got {line!r}"
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((keyword, args))
    return Dockerfile(path, global_args, stages)


def exec_form(args: str) -> list[str]:
    """The JSON (exec) form of CMD / ENTRYPOINT / HEALTHCHECK CMD; fails on the shell form."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def stage_args(stage: Stage) -> dict[str, str]:
    out = {}
    for args in stage.all("ARG"):
        key, _, default = args.partition("=")
        out[key] = default
    return out


def copy_sources(stage: Stage) -> list[str]:
    """Paths a stage copies from the build context (not --from another stage)."""
    out = []
    for kind in ("COPY", "ADD"):
        for args in stage.all(kind):
            words = shlex.split(args)
            if any(w.startswith("--from=") for w in words):
                continue
            words = [w for w in words if not w.startswith("--")]
            out.extend(words[:-1])
    return out


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def dockerfile(request) -> Dockerfile:
    return parse_dockerfile(DOCKERFILES[request.param])


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose_gpu() -> dict:
    return yaml.safe_load(COMPOSE_GPU.read_text())


# --- .dockerignore --------------------------------------------------------------------------


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern:
    """Docker's rules (Go filepath.Match plus ``**``), relative to the context root."""
    pattern = pattern.strip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def excluded(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves ``path`` (relative, /-separated) out of the build context."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern[1:] if negate else pattern)
        if any(regex.match(c) for c in candidates):
            result = not negate
    return result


def test_dockerignore_matcher_follows_docker_rules():
    patterns = [".venv", "data", "**/__pycache__", "**/*.py[cod]", "benchmarks/_data", "docs", "!docs/keep.md"]
    assert excluded(".venv/bin/python", patterns)
    assert excluded("data/recsys.db", patterns) and not excluded("service/data.py", patterns)
    assert excluded("service/__pycache__/app.cpython-311.pyc", patterns) and excluded("x.pyc", patterns)
    assert not excluded("service/web/app.py", patterns)
    assert excluded("benchmarks/_data/x.npy", patterns) and not excluded("benchmarks/bench_index.py", patterns)
    assert excluded("docs/benchmarks.md", patterns) and not excluded("docs/keep.md", patterns)


def test_dockerignore_keeps_local_state_out_of_the_context():
    patterns = dockerignore_patterns()
    for path in (".git/HEAD", ".venv/bin/python", "data/recsys.db", "data/indexes/CURRENT", "benchmarks/_data/v.npy",
                 "benchmarks/out/x.json", "service/__pycache__/app.cpython-311.pyc", ".gpu/minilm/model.bin",
                 "recsys_search.egg-info/PKG-INFO", ".pytest_cache/README.md", "docker/.env"):
        assert excluded(path, patterns), f".dockerignore lets {path} into the build context"


def test_everything_the_images_copy_exists_and_is_in_the_build_context(dockerfile):
    patterns = dockerignore_patterns()
    sources = [src for stage in dockerfile.stages for src in copy_sources(stage)]
    assert {"pyproject.toml", "README.md", "constraints.txt"} <= {Path(s).name for s in sources}
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"{dockerfile.path.name} copies {src}, which is not in the repository"
        files = [path] if path.is_file() else [
            p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        ]
        assert files, f"{src} is empty"
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            assert not excluded(rel, patterns), f".dockerignore excludes {rel}, which {dockerfile.path.name} copies"
    # The packages the wheel is built from, and everything pyproject.toml reads at build time.
    copied = {Path(s).name for s in sources}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"packages not copied into the image: {packages - copied}"
    assert pyproject["project"]["readme"] in copied


# --- Dockerfiles ----------------------------------------------------------------------------


def test_one_shared_base_and_two_targets(dockerfile):
    names = [s.name for s in dockerfile.stages]
    assert {"base", "builder", "service", "indexer"} <= set(names), names
    external = [s for s in dockerfile.stages if s.base not in names]
    assert [s.name for s in external] == ["base"], "only the base stage may start from an outside image"
    for name in ("builder", "service", "indexer"):
        assert dockerfile.stage(name).base == "base", f"{name} must be built FROM base"
    assert names[-1] == "service", "the last stage is the default target: the service"


def test_build_tools_stay_in_the_builder(dockerfile):
    assert "build-essential" in " ".join(dockerfile.stage("builder").all("RUN"))
    for name in ("base", "service", "indexer"):
        runs = " ".join(dockerfile.stage(name).all("RUN"))
        assert "build-essential" not in runs and "pip install" not in runs, f"{name} installs build tools or packages"
        copies = [a for a in dockerfile.stage(name).all("COPY") if "--from=" in a]
        if name != "base":
            assert any(shlex.split(a)[-2:] == ["/opt/venv", "/opt/venv"] and "--from=builder" in a for a in copies), (
                f"{name} must copy the virtual environment from the builder"
            )


def test_torch_versions_match_constraints(dockerfile):
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.lstrip().startswith("#"))
    args = stage_args(dockerfile.stage("builder"))
    assert args["TORCH_VERSION"] == pins["torch"], "TORCH_VERSION differs from constraints.txt"
    assert args["TORCHVISION_VERSION"] == pins["torchvision"], "TORCHVISION_VERSION differs from constraints.txt"
    runs = dockerfile.stage("builder").all("RUN")
    torch_run = next(r for r in runs if '"torch==${TORCH_VERSION}"' in r)
    assert "https://download.pytorch.org/whl/" in torch_run
    project_run = next(r for r in runs if "-c constraints.txt" in r)
    assert runs.index(torch_run) < runs.index(project_run), "torch must be installed before the project"


def test_cpu_image_uses_the_pytorch_cpu_index():
    runs = " ".join(parse_dockerfile(DOCKERFILES["cpu"]).stage("builder").all("RUN"))
    assert "--index-url https://download.pytorch.org/whl/cpu " in runs
    assert re.search(r"pip install -c constraints\.txt \.(\s|$)", runs), "the project is installed with the constraints"


def test_gpu_image_is_cuda_12_with_faiss_gpu():
    df = parse_dockerfile(DOCKERFILES["gpu"])
    base = df.stage("base").base
    image = df.global_args.get(base.strip("${}"), base)
    assert image.startswith("nvidia/cuda:12."), image
    cuda = stage_args(df.stage("builder"))["TORCH_CUDA"]
    assert cuda.startswith("cu12"), f"TORCH_CUDA={cuda}: faiss-gpu-cu12 needs a CUDA 12 torch"
    runs = " ".join(df.stage("builder").all("RUN"))
    assert "download.pytorch.org/whl/${TORCH_CUDA}" in runs
    assert "gpu_requirements.py" in runs and "pip install --no-deps ." in runs


def test_runtime_stages_run_as_an_unprivileged_user(dockerfile):
    base_runs = " ".join(dockerfile.stage("base").all("RUN"))
    for name in ("service", "indexer"):
        users = [u for s in dockerfile.chain(name) for u in s.all("USER")]
        assert users, f"{name} has no USER (it would run as root)"
        user = dockerfile.stage(name).last("USER") or users[0]
        uid = user.split(":")[0]
        assert uid not in ("root", "0"), f"{name} runs as {user}"
        if uid.isdigit():
            assert f"--uid {uid}" in base_runs, f"user {uid} is not created in the base stage"


def test_data_and_index_folders(dockerfile):
    env = " ".join(dockerfile.stage("base").all("ENV"))
    assert "RECSYS_DATA_DIR=/data" in env and "RECSYS_INDEX_DIR=/indexes" in env
    assert "chown recsys:recsys /data /indexes" in " ".join(dockerfile.stage("base").all("RUN"))
    for name in ("service", "indexer"):
        volumes = exec_form(dockerfile.stage(name).last("VOLUME"))
        assert volumes == ["/data", "/indexes"], volumes


def _make_serve_command() -> list[str]:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nserve:", 1)[1]
    line = next(line for line in recipe.splitlines() if "gunicorn" in line and not line.strip().startswith("@"))
    words = shlex.split(line.strip())
    return [w.replace("$(BIN)/", "").replace("$(HOST):$(PORT)", "0.0.0.0:8000") for w in words]


def test_service_target_runs_make_serve_on_every_interface(dockerfile):
    service = dockerfile.stage("service")
    assert exec_form(service.last("CMD")) == _make_serve_command(), "the image CMD differs from `make serve`"
    assert "8000" in service.last("EXPOSE").split()
    assert exec_form(service.last("ENTRYPOINT")) == ["recsys-entrypoint"]
    assert any(a.split()[-2:] == ["docker/entrypoint.sh", "/usr/local/bin/recsys-entrypoint"] for a in service.all("COPY"))


def test_service_healthcheck_uses_python_on_health_live(dockerfile):
    check = dockerfile.stage("service").last("HEALTHCHECK")
    assert check, "the service image has no HEALTHCHECK"
    command = exec_form(check.split("CMD", 1)[1].strip())
    assert command[:2] == ["python", "-c"] and "/health/live" in command[2]
    assert "curl" not in check and "wget" not in check
    assert '"/health/live"' in (ROOT / "service" / "web" / "ops.py").read_text(), "the route the check calls is gone"


def test_indexer_target_is_the_build_job(dockerfile):
    indexer = dockerfile.stage("indexer")
    assert exec_form(indexer.last("ENTRYPOINT")) == ["recsys-indexer"]
    assert exec_form(indexer.last("CMD")) == ["build"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"recsys", "recsys-indexer"} <= set(scripts)


def test_healthcheck_command_passes_on_200_and_fails_otherwise():
    check = parse_dockerfile(DOCKERFILES["cpu"]).stage("service").last("HEALTHCHECK")
    code = exec_form(check.split("CMD", 1)[1].strip())[2]
    statuses = {"/health/live": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            self.send_response(statuses.get(self.path, 404))
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        probe = code.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{server.server_address[1]}")
        assert probe != code, "the healthcheck no longer calls http://127.0.0.1:8000"
        ok = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
        statuses["/health/live"] = 503
        bad = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30)
        assert bad.returncode == 1
    finally:
        server.shutdown()
        server.server_close()


def test_entrypoint_empties_the_metrics_folder_then_runs_the_command(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "counter_123.db").write_bytes(b"stale")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    res = subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), "sh", "-c", 'ls -A "$0"; exit 7', str(metrics)],
                         env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 7, res.stderr  # the command's own exit code comes back
    assert res.stdout == "" and metrics.is_dir() and not any(metrics.iterdir())


# --- GPU requirements -----------------------------------------------------------------------


def _gpu_requirements():
    sys.path.insert(0, str(DOCKER))
    try:
        import gpu_requirements
    finally:
        sys.path.remove(str(DOCKER))
    return gpu_requirements


def test_gpu_requirements_swap_faiss_cpu_for_the_gpu_extra(tmp_path):
    mod = _gpu_requirements()
    reqs = mod.gpu_requirements(ROOT / "pyproject.toml")
    names = [mod._name(r) for r in reqs]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "faiss-cpu" not in names
    assert set(project["optional-dependencies"]["gpu"]) <= set(reqs)
    assert set(reqs) == {r for r in project["dependencies"] if mod._name(r) != "faiss-cpu"} | set(project["optional-dependencies"]["gpu"])
    bad = tmp_path / "pyproject.toml"
    bad.write_text('[project]\ndependencies = ["faiss-cpu>=1.8"]\n[project.optional-dependencies]\ngpu = []\n')
    with pytest.raises(ValueError, match="faiss-gpu"):
        mod.gpu_requirements(bad)
    out = subprocess.run([sys.executable, str(DOCKER / "gpu_requirements.py"), str(ROOT / "pyproject.toml")],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.splitlines() == reqs


# --- compose --------------------------------------------------------------------------------


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _depends(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> named volume (or host path) for short-syntax volumes."""
    out = {}
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2]
        out[target] = source
    return out


def _recsys_services(compose: dict) -> dict[str, dict]:
    return {name: s for name, s in compose["services"].items() if name not in ("postgres", "redis")}


def test_compose_services_and_wiring(compose):
    services = compose["services"]
    assert {"postgres", "migrate", "demo", "indexer", "service", "redis"} <= set(services)
    # The rate limit is shared through Redis, and the service waits for it.
    assert _environment(services["service"])["RECSYS_RATE_LIMIT_STORAGE_URI"].startswith("redis://redis:")
    assert services["service"]["depends_on"]["redis"]["condition"] == "service_healthy"

    pg = services["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])

    migrate = services["migrate"]
    assert migrate["command"] == ["recsys", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert _depends(migrate) == {"postgres": "service_healthy"}

    demo = services["demo"]
    assert "demo" in demo["profiles"]
    assert "recsys demo" in " ".join(demo.get("entrypoint", []) + demo.get("command", []))
    assert _depends(demo)["migrate"] == "service_completed_successfully"

    indexer = services["indexer"]
    assert indexer.get("profiles") or indexer.get("restart") == "no", "the indexer is a job, not a daemon"
    assert indexer["restart"] == "no"
    assert _depends(indexer)["migrate"] == "service_completed_successfully"
    assert indexer["build"]["target"] == "indexer"

    service = services["service"]
    assert _depends(service)["migrate"] == "service_completed_successfully"
    assert service["build"]["target"] == "service"
    assert any(str(p).endswith(":8000") for p in service["ports"])


def test_compose_volumes_are_declared_and_shared(compose):
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for target, source in _mounts(service).items():
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source}"
    for name in ("indexer", "service", "demo"):
        env = _environment(compose["services"][name])
        mounts = _mounts(compose["services"][name])
        assert mounts.get(env["RECSYS_INDEX_DIR"]) == "indexes", f"{name}: index volume not at RECSYS_INDEX_DIR"
        assert mounts.get(env["RECSYS_DATA_DIR"]) == "data", f"{name}: data volume not at RECSYS_DATA_DIR"
    assert compose["services"]["postgres"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]


def test_compose_database_url_points_at_the_postgres_service(compose):
    pg_env = _environment(compose["services"]["postgres"])
    for name, service in _recsys_services(compose).items():
        url = _environment(service)["RECSYS_DATABASE_URL"]
        m = re.fullmatch(r"postgresql\+psycopg://([^:]+):(.+)@([^:/]+):5432/(\w+)", url)
        assert m, f"{name}: RECSYS_DATABASE_URL {url!r}"
        user, password, host, db = m.groups()
        assert (user, host, db) == (pg_env["POSTGRES_USER"], "postgres", pg_env["POSTGRES_DB"])
        assert password == pg_env["POSTGRES_PASSWORD"]


def test_compose_builds_existing_targets(compose, compose_gpu):
    for doc in (compose, compose_gpu):
        for name, service in doc["services"].items():
            build = service.get("build")
            if not build:
                continue
            assert (DOCKER / build["context"]).resolve() == ROOT, f"{name}: build context is not the repository root"
            df = parse_dockerfile(ROOT / build["dockerfile"])
            assert build["target"] in {s.name for s in df.stages}, f"{name}: no target {build['target']}"


def test_compose_gpu_override(compose, compose_gpu):
    assert set(compose_gpu["services"]) <= set(compose["services"])
    indexer = compose_gpu["services"]["indexer"]
    assert indexer["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    devices = indexer["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_every_recsys_variable_is_a_real_setting():
    files = [*DOCKERFILES.values(), COMPOSE, COMPOSE_GPU, DOCKER / "entrypoint.sh"]
    used = {}
    for f in files:
        for var in RECSYS_VAR.findall(f.read_text()):
            used.setdefault(var, f.name)
    assert used, "no RECSYS_ variable found at all"
    unknown = {var: where for var, where in used.items() if var not in SETTING_VARIABLES}
    assert not unknown, f"not settings (see `recsys config`): {unknown}"
