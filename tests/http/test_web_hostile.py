"""The HTTP layer under hostile tenants: /metrics needs a key, a busy store is 503 with Retry-After,
stalled uploads time out, and deploy checks never hold the request threads.

Real servers on 127.0.0.1: `tenantflow serve` subprocesses (helpers_server), or the real app under
uvicorn in this process where a test needs to reach inside (a monkeypatched service, a short timeout).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers_server import ServerProcess, Servers, app_server, servers
from tenantflow.host import Sandbox
from tenantflow.runtime.errors import Unavailable
from tenantflow.runtime.http.api import create_app
from tenantflow.runtime.http.server import uvicorn_config
from tenantflow.runtime.service import Service

TOKEN = "metrics-secret-token"

ECHO = """
def run(event, step):
    return step.do("echo", lambda: event.payload)
"""

SPIN_AT_IMPORT = """
while True:
    pass

def run(event, step):
    return 1
"""


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with servers(tmp_path_factory.mktemp("web")) as started:
        yield started


@pytest.fixture(scope="module")
def server(group: Servers) -> ServerProcess:
    return group.start("hostile", extra=["--metrics-token", TOKEN])


@pytest.fixture(scope="module")
def keys(server: ServerProcess) -> dict[str, str]:
    return {
        name: str(server.create_tenant(name, *options)["api_key"])
        for name, options in (("alpha", ()), ("beta", ()), ("ops", ("--operator",)), ("small", ("--memory-mb", "32")))
    }


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_problem(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    for word in words:
        assert word.lower() in body["detail"].lower(), body
    return body


# -- /metrics --------------------------------------------------------------------------------


def test_metrics_need_the_operator_key_or_the_metrics_token(server: ServerProcess, keys: dict[str, str]) -> None:
    url = server.url + "/metrics"
    assert_problem(httpx.get(url), 401, "operator key")
    assert httpx.get(url).headers["www-authenticate"].startswith("Bearer")
    assert_problem(httpx.get(url, headers=bearer("not-the-token")), 401, "unknown")
    assert_problem(httpx.get(url, headers=bearer(keys["alpha"])), 403, "operator key")
    for key in (keys["ops"], TOKEN):
        answer = httpx.get(url, headers=bearer(key))
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        assert "tenantflow_activations_total" in answer.text


def test_the_metrics_token_is_taken_from_the_environment(group: Servers, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTFLOW_METRICS_TOKEN", "from-env")
    server = group.start("env-token")  # (the server process inherits the environment)
    assert httpx.get(server.url + "/metrics", headers=bearer("from-env")).status_code == 200
    assert_problem(httpx.get(server.url + "/metrics", headers=bearer(TOKEN)), 401)


# -- in-process servers ------------------------------------------------------------------------


@pytest.fixture
def local(sandbox: Sandbox, tmp_path: Path) -> Iterator[tuple[Service, str, str]]:
    """(service, its tenant's key, url) of the real app under uvicorn, with a 0.5 s body timeout."""
    service = Service.open(f"sqlite:///{tmp_path / 'tf.db'}", sandbox=sandbox, workers=1)
    _, key = service.create_tenant("acme")
    app = create_app(service, body_timeout_s=0.5)
    try:
        with app_server(app, uvicorn_config(app, "warning", header_timeout_s=0.5)) as url:
            yield service, key, url
    finally:
        service.store.close()


def test_a_busy_store_is_503_with_retry_after(local: tuple[Service, str, str], monkeypatch: Any) -> None:
    service, key, url = local

    def busy(*args: Any) -> Any:
        raise Unavailable("the database is locked; retry shortly", retry_after_s=2.5)

    monkeypatch.setattr(service, "workflows", busy)
    answer = httpx.get(url + "/v1/workflows", headers=bearer(key))
    body = assert_problem(answer, 503, "locked")
    assert answer.headers["retry-after"] == "3"
    assert body["retry_after_s"] == 2.5
    assert body["title"] == "Service unavailable"
    assert body["type"].endswith(":unavailable")


def _stalled_upload(url: str, key: str) -> socket.socket:
    """A PUT whose headers promise 1000 bytes of body, of which 10 are sent."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        (
            f"PUT /v1/workflows/stalled HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            '{"source":'
        ).encode()
    )
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_stalled_uploads_get_408_and_are_closed(local: tuple[Service, str, str]) -> None:
    _, key, url = local
    started = time.monotonic()
    stalled = [_stalled_upload(url, key) for _ in range(50)]
    # The server stays responsive meanwhile.
    assert httpx.get(url + "/v1/workflows", headers=bearer(key), timeout=5).status_code == 200
    for sock in stalled:
        with sock:
            answer = _read_all(sock)  # returns once the server closes the connection
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer[:300]
        assert b"connection: close" in head.lower()
        assert b"did not arrive within 0.5 s" in body
    assert time.monotonic() - started < 5


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    """What the server sent before it closed the connection, which it must do within `seconds`."""
    sock.settimeout(seconds)
    try:
        return _read_all(sock)
    except TimeoutError:
        raise AssertionError(f"the connection is still open after {seconds} s") from None


def test_connections_that_never_finish_their_headers_are_closed(local: tuple[Service, str, str]) -> None:
    _, key, url = local
    host, port = url.removeprefix("http://").split(":")
    idle = socket.create_connection((host, int(port)))
    partial = socket.create_connection((host, int(port)))
    partial.sendall(b"GET /v1/workflows HTTP/1.1\r\nHost: x\r\n")
    trickle = socket.create_connection((host, int(port)))
    kept = socket.create_connection((host, int(port)))
    kept.sendall(f"GET /v1/workflows HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
    first = kept.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first
    kept.sendall(b"GET /v1/workflows HTTP/1.1\r\n")  # a second request on the same connection, stalled
    started = time.monotonic()
    for _ in range(30):  # a byte every 0.1 s: each would reset an idle timer, not this deadline
        try:
            trickle.sendall(b"X")
        except OSError:  # closed by the server
            break
        time.sleep(0.1)
    for sock in (idle, partial, trickle, kept):
        with sock:
            assert b"HTTP/1.1 200" not in _closed_within(sock, 3)
    assert time.monotonic() - started < 4
    # A request that comes whole is served as usual.
    assert httpx.get(url + "/v1/workflows", headers=bearer(key)).status_code == 200


def test_a_slow_but_steady_body_within_the_deadline_is_fine(local: tuple[Service, str, str]) -> None:
    _, key, url = local
    body = b'{"source": "def run(event, step):\\n    return 1\\n"}'

    def trickle() -> Iterator[bytes]:
        for i in range(0, len(body), 20):
            time.sleep(0.05)
            yield body[i : i + 20]

    answer = httpx.put(url + "/v1/workflows/slow", content=trickle(), headers=bearer(key), timeout=10)
    assert answer.status_code == 201, answer.text


# -- deploy checks ---------------------------------------------------------------------------


def _deploy(url: str, key: str, name: str, source: str) -> httpx.Response:
    return httpx.put(f"{url}/v1/workflows/{name}", json={"source": source}, headers=bearer(key), timeout=120)


def test_deploys_of_spinning_module_code_do_not_slow_other_tenants(server: ServerProcess, keys: dict[str, str]) -> None:
    assert _deploy(server.url, keys["beta"], "calm", ECHO).status_code in (200, 201)
    with server.http(keys["beta"]) as beta:
        assert beta.get("/v1/workflows").status_code == 200  # warm
        with ThreadPoolExecutor(48) as pool:
            futures = [pool.submit(_deploy, server.url, keys["alpha"], f"spin{i}", SPIN_AT_IMPORT) for i in range(45)]
            latencies = []
            while not all(f.done() for f in futures):
                began = time.perf_counter()
                assert beta.get("/v1/workflows").status_code == 200
                latencies.append(time.perf_counter() - began)
                time.sleep(0.05)
            answers = [f.result() for f in futures]
    statuses = sorted({a.status_code for a in answers})
    assert set(statuses) <= {422, 429, 503}, statuses
    refused = [a for a in answers if a.status_code == 422]
    assert refused and all("FuelExhausted" in a.json()["detail"] for a in refused)
    for answer in answers:
        if answer.status_code in (429, 503):
            assert int(answer.headers["retry-after"]) >= 1
    assert max(latencies) < 1.0, latencies


def test_deploy_checks_run_under_the_tenants_memory_quota(server: ServerProcess, keys: dict[str, str]) -> None:
    source = "BIG = bytearray(100 << 20)\n\ndef run(event, step):\n    return len(BIG)\n"
    answer = _deploy(server.url, keys["small"], "big", source)
    assert_problem(answer, 422, "MemoryLimitExceeded")
    assert _deploy(server.url, keys["alpha"], "big", source).status_code == 201  # 256 MiB by default
