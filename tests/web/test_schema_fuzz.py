"""Schema fuzzing: schemathesis generates requests for every operation of the live ``/openapi.json``.

The real app is served over real HTTP (werkzeug, a thread on 127.0.0.1) over a small published
index with some behaviour recorded. Each operation gets positive cases (valid by the document),
negative ones (invalid by it) and, where the path names an item or a user, positive cases about
one that exists (random ids are nearly always 404s, whose bodies say little). All of it runs
once with no key configured and once with keys required and an admin key sent. Every answer
must be a non-5xx whose status is listed for the operation and whose body matches the documented
schema. Generation is derandomized: the same requests every run.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from werkzeug.serving import WSGIRequestHandler, make_server

from service.web.app import create_app
from tests.web.test_api import built  # noqa: F401 - the module-scoped catalog + index fixture

pytestmark = [
    pytest.mark.slow,
    # Huge generated floats for raw vectors overflow float32 on the way to their 400: expected.
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
]

ADMIN_KEY = "fuzz-admin-key"
PASSES = {
    "open": ({}, {}),
    "keys": ({"read_keys": '["fuzz-read-key"]', "api_keys": '["fuzz-write-key"]', "admin_keys": f'["{ADMIN_KEY}"]',
              "read_requires_key": True}, {"X-API-Key": ADMIN_KEY}),
}
# Cases per operation and pass: (name, mode, examples, use known ids). Operations with a small
# input space (no parameters) end sooner; an invalid request may not exist at all.
PLANS = [
    ("positive", GenerationMode.POSITIVE, 60, False),
    ("negative", GenerationMode.NEGATIVE, 30, False),
    ("known", GenerationMode.POSITIVE, 25, True),
]
MIN_REQUESTS_PER_PASS = 1000  # about 1,400 are sent
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
# Ids that exist: reads use an item with an image and a user with history; writes a scratch item.
USER = "fuzz-user"
READ_IDS = {"item_id": "jacket", "user_id": USER}
WRITE_IDS = {"item_id": "fuzz-scratch"}


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # a thousand access lines would bury a failure
        pass


@contextlib.contextmanager
def serve(app):
    """The app over real HTTP on a free port: yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


def _problems(case, response, headers) -> list[str]:
    problems = []
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except (AssertionError, BaseExceptionGroup) as exc:
        group = exc.exceptions if isinstance(exc, BaseExceptionGroup) else [exc]
        problems += [f"{getattr(f, 'title', type(f).__name__)}: {getattr(f, 'message', f)}" for f in group]
    # status_code_conformance accepts anything under a ``default`` response: require the status itself.
    if str(response.status_code) not in case.operation.definition.raw.get("responses", {}):
        problems.append(f"status {response.status_code} is not listed for the operation")
    return problems


def fuzz(base: str, headers: dict[str, str]) -> tuple[set[str], Counter, Counter, list[str]]:
    """Run every plan on every operation: (operations, requests per operation, statuses, failures)."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", headers=headers)
    operations: set[str] = set()
    sent: Counter = Counter()
    statuses: Counter = Counter()
    failures: list[str] = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            label = f"{operation.method.upper()} {operation.path}"
            operations.add(label)
            for plan, mode, examples, known in PLANS:
                ids = WRITE_IDS if operation.method.upper() in ("PUT", "DELETE") else READ_IDS
                fixed = {n: v for n, v in ids.items() if "{%s}" % n in operation.path} if known else {}
                if known and not fixed:
                    continue

                @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed or None))
                def run(case):
                    response = case.call(base_url=base, session=session, headers=headers, timeout=60)
                    sent[label] += 1
                    statuses[response.status_code] += 1
                    problems = _problems(case, response, headers)
                    if problems:
                        failures.append(f"{label} [{plan}] -> {response.status_code}: {'; '.join(problems)}\n"
                                        f"    {case.as_curl_command(headers=headers, base_url=base)}\n"
                                        f"    {response.text[:300]}")

                try:
                    run()
                except Unsatisfiable:
                    # No invalid request exists for it (nothing to vary): nothing to send.
                    assert mode is GenerationMode.NEGATIVE, label
    return operations, sent, statuses, failures


def _seed_behaviour(base: str, headers: dict[str, str]) -> None:
    """Events for USER and others, so users, trending and personal recommendations have answers."""
    items = ["jacket", "shoe-red", "shoe-blue", "kettle", "art-rain"]
    events = [{"event_id": f"fuzz-{u}-{i}", "user_id": u, "item_id": item, "type": t}
              for u in (USER, "fuzz-other") for i, (item, t) in enumerate(zip(items, ["view", "click", "purchase"] * 2))]
    resp = requests.post(f"{base}/events", json=events, headers=headers, timeout=60)
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("name", list(PASSES))
def test_every_operation_answers_as_documented(name, built, monkeypatch):  # noqa: F811
    for key in [k for k in os.environ if k.startswith("RECSYS_")]:
        monkeypatch.delenv(key)
    overrides, headers = PASSES[name]
    app = create_app({**built["overrides"], **overrides})
    with serve(app) as base:
        _seed_behaviour(base, headers)
        operations, sent, statuses, failures = fuzz(base, headers)
    total = sum(sent.values())
    print(f"\n{name}: {total} requests over {len(operations)} operations; statuses {dict(sorted(statuses.items()))}")
    assert set(sent) == operations, f"operations never called: {sorted(operations - set(sent))}"
    assert total >= MIN_REQUESTS_PER_PASS, sent
    assert not failures, f"{len(failures)} of {total} requests failed:\n" + "\n".join(failures[:30])
