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
COMPOSE_SCALE = DOCKER / "compose.scale.yaml"
CADDYFILE = DOCKER / "Caddyfile"
RAY_JOB = DOCKER / "ray-job.sh"
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


@pytest.fixture(scope="module")
def compose_scale() -> dict:
    return yaml.safe_load(COMPOSE_SCALE.read_text())


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


def test_cpu_image_takes_optional_extras_and_ships_the_ray_job():
    df = parse_dockerfile(DOCKERFILES["cpu"])
    assert stage_args(df.stage("builder")).get("EXTRAS") == '""', "EXTRAS must default to no extra"
    runs = " ".join(df.stage("builder").all("RUN"))
    assert 'if [ -n "$EXTRAS" ]; then pip install -c constraints.txt ".[${EXTRAS}]"; fi' in runs
    assert runs.index("pip install -c constraints.txt .") < runs.index("pip check"), "pip check must see the extras too"
    copies = [shlex.split(a) for a in df.stage("indexer").all("COPY")]
    assert any(c[-2:] == ["docker/ray-job.sh", "/usr/local/bin/recsys-ray-job"] and "--chmod=0755" in c for c in copies)


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


def test_compose_builds_existing_targets(compose, compose_gpu, compose_scale):
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for doc in (compose, compose_gpu, compose_scale):
        for name, service in doc["services"].items():
            build = service.get("build")
            if not build:
                continue
            assert (DOCKER / build["context"]).resolve() == ROOT, f"{name}: build context is not the repository root"
            df = parse_dockerfile(ROOT / build["dockerfile"])
            assert build["target"] in {s.name for s in df.stages}, f"{name}: no target {build['target']}"
            for arg, value in (build.get("args") or {}).items():
                assert arg in stage_args(df.stage("builder")), f"{name}: build arg {arg} is not an ARG of the builder"
                if arg == "EXTRAS":
                    assert set(value.split(",")) <= extras, f"{name}: EXTRAS={value} names no extra of pyproject.toml"


def test_compose_gpu_override(compose, compose_gpu):
    assert set(compose_gpu["services"]) <= set(compose["services"])
    indexer = compose_gpu["services"]["indexer"]
    assert indexer["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    devices = indexer["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_every_recsys_variable_is_a_real_setting():
    files = [*DOCKERFILES.values(), COMPOSE, COMPOSE_GPU, COMPOSE_SCALE, CADDYFILE, RAY_JOB, DOCKER / "entrypoint.sh"]
    used = {}
    for f in files:
        for var in RECSYS_VAR.findall(f.read_text()):
            used.setdefault(var, f.name)
    assert used, "no RECSYS_ variable found at all"
    unknown = {var: where for var, where in used.items() if var not in SETTING_VARIABLES}
    assert not unknown, f"not settings (see `recsys config`): {unknown}"


# --- compose: scaled out (docker/compose.scale.yaml, docker/Caddyfile, docker/ray-job.sh) -----

INTERPOLATED = re.compile(r"\$\{[A-Z0-9_]+(:?-[^}]*)?\}")


def _volumes(service: dict) -> dict[str, str | None]:
    """Container path -> volume name (None: an anonymous volume), short and long syntax."""
    out: dict[str, str | None] = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out[v["target"]] = v.get("source")
        else:
            parts = v.split(":")
            out[parts[1] if len(parts) > 1 else parts[0]] = parts[0] if len(parts) > 1 else None
    return out


def _flag(command: list[str], name: str) -> str | None:
    """Value of ``--name=value`` in an exec-form command (None when absent)."""
    for word in command:
        if word.startswith(f"--{name}="):
            return word.split("=", 1)[1]
    return None


def test_compose_scale_is_a_separate_project(compose, compose_scale):
    # Its own project name, so its containers and volumes never mix with the single-host setup's.
    assert compose_scale["name"] != compose["name"]
    assert not {"ray-head", "ray-worker", "minio", "proxy"} & set(compose["services"]), "compose.yaml must stay single-host"
    assert not re.search(r"RECSYS_(ARTIFACT|RAY)_", COMPOSE.read_text()), "compose.yaml must stay single-host"


def test_compose_scale_ray_cluster(compose_scale):
    services = compose_scale["services"]
    head, worker, indexer = services["ray-head"], services["ray-worker"], services["indexer"]
    for name in ("ray-head", "ray-worker", "indexer", "demo"):
        s = services[name]
        assert s["build"]["target"] == "indexer" and s["build"]["args"]["EXTRAS"] == "scale", f"{name}: not the scale image"
        assert s["image"] == head["image"], f"{name}: every Ray node runs the same image (same Ray and Python)"
        assert s.get("shm_size"), f"{name}: Ray's object store needs more than Docker's 64 MB /dev/shm"
        assert s.get("init") is True, f"{name}: signals must reach the Ray/indexer processes"
    assert head["entrypoint"] == ["ray"] and head["command"][0] == "start" and "--head" in head["command"]
    assert "--block" in head["command"] and "--block" in worker["command"], "a node's container lives as long as its node"
    port = _flag(head["command"], "port")
    assert worker["command"][0] == "start" and _flag(worker["command"], "address") == f"ray-head:{port}"
    assert head["healthcheck"]["test"][1:3] == ["ray", "health-check"]
    assert _depends(worker) == {"ray-head": "service_healthy"}
    # The indexer joins the cluster it builds on, through recsys-ray-job.
    assert indexer["entrypoint"] == ["recsys-ray-job"] and indexer["command"] == ["build"]
    env = _environment(indexer)
    assert env["RECSYS_RAY_ADDRESS"] == f"ray-head:{port}"
    assert "recsys-ray-job build" in " ".join(services["demo"]["entrypoint"])
    assert indexer["profiles"] == ["indexer"] and services["demo"]["profiles"] == ["demo"], "jobs stay out of `up`"
    for name in ("indexer", "demo"):
        assert services[name]["restart"] == "no", f"{name} is a job"
        deps = _depends(services[name])
        assert deps["ray-head"] == "service_healthy" and deps["ray-worker"] == "service_healthy"
        assert deps["migrate"] == deps["minio-init"] == "service_completed_successfully"
        assert _volumes(services[name])["/indexes"] == "indexer-cache", f"{name}: the vector cache must persist"


def test_compose_scale_object_store(compose_scale):
    services = compose_scale["services"]
    minio, init = services["minio"], services["minio-init"]
    assert minio["healthcheck"]["test"][:3] == ["CMD", "mc", "ready"]
    assert _depends(init) == {"minio": "service_healthy"} and init["restart"] == "no"
    bucket = _environment(init)["BUCKET"]
    for name in ("indexer", "demo", "service", "migrate", "ray-head", "ray-worker"):
        env = _environment(services[name])
        if name not in ("ray-head", "ray-worker"):
            assert env["RECSYS_ARTIFACT_URL"] == f"s3://{bucket}/indexes", f"{name}: not minio-init's bucket"
        assert env["RECSYS_IMAGE_URL"] == f"s3://{bucket}/images", f"{name}: another image store"
        options = json.loads(env["RECSYS_ARTIFACT_OPTIONS"])
        assert options == {"client_kwargs": {"endpoint_url": "http://minio:9000"}}
    # The indexer writes with the read-write key, the replicas with the key minio-init limits.
    init_env = _environment(init)
    for name, role in (("indexer", "INDEXER"), ("service", "SERVICE")):
        env = _environment(services[name])
        assert env["AWS_ACCESS_KEY_ID"] == init_env[f"{role}_ACCESS_KEY"]
        assert env["AWS_SECRET_ACCESS_KEY"] == init_env[f"{role}_SECRET_KEY"]
        assert _depends(services[name])["minio-init"] == "service_completed_successfully"


def test_minio_init_creates_the_bucket_keys_and_policies(compose_scale, tmp_path):
    """The bucket-and-keys script, run by sh against a stand-in `mc` (compose turns $$ into $)."""
    init = compose_scale["services"]["minio-init"]
    assert init["entrypoint"] == ["/bin/sh", "-c"]
    script = init["command"][0].replace("$$", "$")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "mc").write_text(
        f'#!/bin/sh\necho "mc $*" >> {log}\n'
        f'case "$*" in "admin policy create "*) cp "$6" {tmp_path}/policy.json ;; esac\n'
        # A rerun: the policy is attached already, which must not fail the job.
        'case "$*" in "admin policy attach "*) [ -f ' f'{tmp_path}/attached ] && '
        '{ echo "mc: <ERROR> The specified policy change is already in effect." >&2; exit 1; } ;; esac\n'
        "exit 0\n"
    )
    (bin_dir / "mc").chmod(0o755)
    defaults = {k: INTERPOLATED.sub(lambda m: (m.group(1) or "")[2:], v) for k, v in _environment(init).items()}
    env = {**os.environ, **defaults, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    for run in ("first", "again"):
        res = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, f"{run}: {res.stderr}"
        (tmp_path / "attached").touch()
    calls = log.read_text().splitlines()
    bucket, indexer, service = env["BUCKET"], env["INDEXER_ACCESS_KEY"], env["SERVICE_ACCESS_KEY"]
    assert f"mc mb --ignore-existing local/{bucket}" in calls
    assert f"mc admin policy attach local readwrite --user {indexer}" in calls
    assert f"mc admin policy attach local recsys-service --user {service}" in calls
    statements = json.loads((tmp_path / "policy.json").read_text())["Statement"]
    allowed = {(action, resource) for s in statements if s["Effect"] == "Allow"
               for action in s["Action"] for resource in s["Resource"]}
    assert ("s3:GetObject", f"arn:aws:s3:::{bucket}/*") in allowed
    assert {a for a, r in allowed if a in ("s3:PutObject", "s3:DeleteObject")} == {"s3:PutObject"}
    assert {r for a, r in allowed if a == "s3:PutObject"} == {f"arn:aws:s3:::{bucket}/images/*"}, (
        "replicas may add images, never touch index versions")
    # A failure other than "already in effect" still fails the job.
    broken = bin_dir / "mc"
    broken.write_text('#!/bin/sh\ncase "$*" in "admin policy attach "*) echo "mc: <ERROR> no such user" >&2; exit 1 ;; esac\n')
    res = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and "no such user" in res.stderr


def test_compose_scale_replicas_behind_the_proxy(compose_scale):
    services = compose_scale["services"]
    service, proxy = services["service"], services["proxy"]
    assert service["deploy"]["replicas"] >= 2
    assert "ports" not in service and "container_name" not in service, "replicas must be scalable (--scale)"
    env = _environment(service)
    assert env["RECSYS_TRUSTED_PROXIES"] == "1", "one proxy in front: limits must key on the forwarded client"
    assert env["RECSYS_RATE_LIMIT_STORAGE_URI"].startswith("redis://redis:"), "replicas must share rate limits"
    volumes = _volumes(service)
    assert volumes[env["RECSYS_INDEX_DIR"]] is None, "each replica needs its own (anonymous) local index cache"
    assert volumes[env["RECSYS_DATA_DIR"]] == "data", "replicas share the image store"
    deps = _depends(service)
    assert deps["postgres"] == deps["redis"] == "service_healthy"
    assert deps["migrate"] == deps["minio-init"] == "service_completed_successfully"
    assert _depends(proxy) == {"service": "service_healthy"}
    # The proxy: the only published port, its own health check, this file's Caddyfile.
    published = [name for name, s in services.items() if s.get("ports")]
    assert published == ["proxy"], f"only the proxy publishes a port, not {published}"
    host_port, container_port = proxy["ports"][0].rsplit(":", 1)
    config = _volumes(proxy)["/etc/caddy/Caddyfile"]
    assert (DOCKER / config).resolve() == CADDYFILE
    assert proxy["healthcheck"]["test"][-1] == f"http://127.0.0.1:{container_port}/health/proxy"
    assert "8000" in host_port


def test_caddyfile_proxies_every_replica():
    text = CADDYFILE.read_text()
    compose_scale = yaml.safe_load(COMPOSE_SCALE.read_text())
    container_port = compose_scale["services"]["proxy"]["ports"][0].rsplit(":", 1)[1]
    assert re.search(rf"^:{container_port} \{{", text, re.M), "Caddy must listen on the port compose publishes"
    dynamic = re.search(r"dynamic a \{\s*name (\S+)\s*port (\d+)", text)
    assert dynamic, "replicas must be found by DNS (dynamic a), so --scale needs no config change"
    assert dynamic.group(1) == "service" and dynamic.group(1) in compose_scale["services"]
    assert dynamic.group(2) == "8000" and "8000" in parse_dockerfile(DOCKERFILES["cpu"]).stage("service").last("EXPOSE")
    assert re.search(r"handle /health/proxy \{\s*respond", text), "the proxy's health path answers by itself"
    assert "fail_duration" in text and "lb_try_duration" in text, "a dead replica must be skipped (passive checks)"
    assert "trusted_proxies" not in text.split("{", 2)[1], "Caddy is the edge: it must not trust forwarded headers"


def test_compose_scale_database_and_health(compose_scale):
    services = compose_scale["services"]
    pg_env = _environment(services["postgres"])
    for name in ("migrate", "indexer", "demo", "service"):
        url = _environment(services[name])["RECSYS_DATABASE_URL"]
        m = re.fullmatch(r"postgresql\+psycopg://([^:]+):(.+)@([^:/]+):5432/(\w+)", url)
        assert m, f"{name}: RECSYS_DATABASE_URL {url!r}"
        assert m.groups() == (pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], "postgres", pg_env["POSTGRES_DB"])
    for name, s in services.items():
        if s.get("restart") == "unless-stopped":
            built = s.get("build", {}).get("target") == "service"  # the image's own HEALTHCHECK
            assert s.get("healthcheck") or built, f"{name}: a long-running service without a health check"
    declared = set(compose_scale["volumes"])
    for name, s in services.items():
        for target, source in _volumes(s).items():
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_compose_scale_secrets_come_from_the_environment(compose_scale):
    for name, s in compose_scale["services"].items():
        for key, value in _environment(s).items():
            if re.search(r"PASSWORD|SECRET", key):
                assert INTERPOLATED.fullmatch(value), f"{name}: {key} is hard-coded ({value!r}), not ${{VAR:-dev default}}"
        url = _environment(s).get("RECSYS_DATABASE_URL", "")
        if url:
            assert "${POSTGRES_PASSWORD:-" in url, f"{name}: the database password must come from POSTGRES_PASSWORD"
    assert "DEVELOPMENT" in COMPOSE_SCALE.read_text(), "the development defaults must be marked as such"


# --- recsys-ray-job ---------------------------------------------------------------------------


def _fake_tools(tmp_path: Path, indexer_body: str, ray_start_rc: int = 0) -> dict[str, str]:
    """A PATH with stand-ins for `ray` and `recsys-indexer` that log their calls to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "ray").write_text(f'#!/bin/sh\necho "ray $*" >> {log}\n[ "$1" = start ] && exit {ray_start_rc}\nexit 0\n')
    (bin_dir / "recsys-indexer").write_text(f'#!/bin/sh\necho "recsys-indexer $*" >> {log}\n{indexer_body}\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_ray_job_joins_runs_leaves_and_keeps_the_exit_code(tmp_path):
    env = {**_fake_tools(tmp_path, "exit 3"), "RECSYS_RAY_ADDRESS": "ray-head:6379"}
    res = subprocess.run(["sh", str(RAY_JOB), "build", "--full"], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 3, res.stderr  # e.g. the recall floor: the scheduler must see it
    calls = _calls(tmp_path)
    assert calls[0].startswith("ray start --address=ray-head:6379 --num-cpus=0 --num-gpus=0")
    assert calls[1:] == ["recsys-indexer build --full", "ray stop"]


def test_ray_job_fails_without_running_when_the_cluster_is_unreachable(tmp_path):
    env = {**_fake_tools(tmp_path, "exit 0", ray_start_rc=1), "RECSYS_RAY_ADDRESS": "ray-head:6379"}
    res = subprocess.run(["sh", str(RAY_JOB), "build"], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "cannot join the Ray cluster at ray-head:6379" in res.stderr
    assert [c.split()[:2] for c in _calls(tmp_path)] == [["ray", "start"]]


@pytest.mark.parametrize("address", ["", "auto", "ray://ray-head:10001"])
def test_ray_job_runs_the_command_alone_without_a_cluster_address(tmp_path, address):
    env = {**_fake_tools(tmp_path, "exit 0"), "RECSYS_RAY_ADDRESS": address}
    res = subprocess.run(["sh", str(RAY_JOB), "list"], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert _calls(tmp_path) == ["recsys-indexer list"]


def test_ray_job_passes_sigterm_on_and_waits_for_the_build(tmp_path):
    # The stand-in build stops cleanly on SIGTERM with the indexer's code for an interruption.
    body = f"trap 'echo stopping >> {tmp_path}/calls.log; sleep 0.3; exit 130' TERM\necho ready > {tmp_path}/ready\n" \
           "while :; do sleep 0.1; done"
    env = {**_fake_tools(tmp_path, body), "RECSYS_RAY_ADDRESS": "ray-head:6379"}
    proc = subprocess.Popen(["sh", str(RAY_JOB), "build"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if (tmp_path / "ready").exists():
                break
            threading.Event().wait(0.05)
        proc.terminate()
        assert proc.wait(timeout=30) == 130
    finally:
        proc.kill()
    assert _calls(tmp_path)[-3:] == ["recsys-indexer build", "stopping", "ray stop"]
