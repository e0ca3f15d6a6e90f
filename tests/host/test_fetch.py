"""The `fetch` capability: HTTP through the host, to the tenant's egress allowlist only.

Servers bind 127.0.0.1 only. SSRF cases that need other addresses resolve names through a
patched resolver, so nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import json
import socket
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from memjournal import MemJournal
from tenantflow.host import Completed, Failed, Grants, Limits, Outcome, Sandbox
from tenantflow.host import fetch as fetch_module
from tenantflow.host.fetch import EgressDenied, FetchError, FetchTimeout, ResponseTooLarge, fetch

LIMITS = Limits(fuel=2_000_000_000, memory_bytes=64 << 20, deadline_s=10)

GUEST = """
from tenantflow import CapabilityError, fetch

def run(event, step):
    request = event.payload
    try:
        response = fetch(request["url"], method=request.get("method", "GET"),
                         headers=request.get("headers"), body=request.get("body"))
    except CapabilityError as error:
        return {"error": str(error)}
    return {"status": response.status, "ok": response.ok, "headers": response.headers, "body": response.text}
"""


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that give up early (size and time limits) break pipes; that is expected


class Server:
    """A small HTTP server on 127.0.0.1 that counts the requests it gets."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                server.hits[parts.path] += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if parts.path == "/json":
                    self._reply(200, b'{"hello": "world"}', {"Content-Type": "application/json", "X-Test": "yes"})
                elif parts.path == "/echo":
                    echoed = {
                        "method": self.command,
                        "body": body.decode(),
                        "x_tenant": self.headers.get("X-Tenant"),
                        "host": self.headers.get("Host"),
                    }
                    self._reply(201, json.dumps(echoed).encode())
                elif parts.path == "/big":
                    self._reply(200, b"b" * int(query["n"]))
                elif parts.path == "/slow":
                    server.stopping.wait(float(query["s"]))
                    with contextlib.suppress(OSError):
                        self._reply(200, b"late")
                elif parts.path == "/redirect":
                    self._reply(int(query.get("code", "302")), b"", {"Location": query["to"]})
                elif parts.path == "/loop":
                    self._reply(302, b"", {"Location": "/loop"})
                else:
                    self._reply(404, b"no such page")

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Server, Server]]:
    a, b = Server(), Server()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def a(servers: tuple[Server, Server]) -> Server:
    servers[0].hits.clear()
    return servers[0]


@pytest.fixture
def b(servers: tuple[Server, Server]) -> Server:
    servers[1].hits.clear()
    return servers[1]


def guest_fetch(
    sandbox: Sandbox, grants: Grants | None, url: str, limits: Limits = LIMITS, **request: Any
) -> dict[str, Any]:
    outcome = sandbox.run(textwrap.dedent(GUEST), {"payload": {"url": url, **request}}, MemJournal(), limits, grants)
    assert isinstance(outcome, Completed), outcome
    result: dict[str, Any] = json.loads(outcome.output)
    return result


def refused(result: dict[str, Any]) -> str:
    assert "error" in result, result
    error: str = result["error"]
    return error


# -- the allowlist -----------------------------------------------------------------


def test_no_egress_by_default(sandbox: Sandbox, a: Server) -> None:
    for grants in (None, Grants()):
        assert refused(guest_fetch(sandbox, grants, a.url("/json"))).startswith("EgressDenied")
    assert sum(a.hits.values()) == 0


def test_allowed_address_is_fetched_through_the_host(sandbox: Sandbox, a: Server) -> None:
    result = guest_fetch(sandbox, Grants(egress=("127.0.0.1",)), a.url("/json"))
    assert result["status"] == 200 and result["ok"] is True
    assert json.loads(result["body"]) == {"hello": "world"}
    assert result["headers"]["X-Test"] == "yes"
    assert a.hits["/json"] == 1


def test_post_with_body_and_headers(sandbox: Sandbox, a: Server) -> None:
    result = guest_fetch(
        sandbox,
        Grants(egress=("127.0.0.1",)),
        a.url("/echo"),
        method="POST",
        headers={"X-Tenant": "t1"},
        body='{"n": 1}',
    )
    assert result["status"] == 201
    assert json.loads(result["body"]) == {
        "method": "POST",
        "body": '{"n": 1}',
        "x_tenant": "t1",
        "host": f"127.0.0.1:{a.port}",
    }


def test_non_2xx_is_a_response_not_an_error(sandbox: Sandbox, a: Server) -> None:
    result = guest_fetch(sandbox, Grants(egress=("127.0.0.1",)), a.url("/missing"))
    assert result["status"] == 404 and result["ok"] is False and result["body"] == "no such page"


def test_allowlist_entry_with_port_allows_only_that_port(sandbox: Sandbox, a: Server, b: Server) -> None:
    grants = Grants(egress=(f"127.0.0.1:{a.port}",))
    assert guest_fetch(sandbox, grants, a.url("/json"))["status"] == 200
    assert refused(guest_fetch(sandbox, grants, b.url("/json"))).startswith("EgressDenied")
    assert sum(b.hits.values()) == 0


def test_allowlisted_name_that_resolves_to_loopback_is_refused(sandbox: Sandbox, a: Server) -> None:
    for entry in ("localhost", f"localhost:{a.port}"):
        error = refused(guest_fetch(sandbox, Grants(egress=(entry,)), a.url("/json", host="localhost")))
        assert error.startswith("EgressDenied") and "non-public" in error
    assert sum(a.hits.values()) == 0


def test_loopback_name_is_allowed_when_the_address_is_named_explicitly(sandbox: Sandbox, a: Server) -> None:
    grants = Grants(egress=("localhost", "127.0.0.1"))
    assert guest_fetch(sandbox, grants, a.url("/json", host="localhost"))["status"] == 200
    # The explicit address must cover the port too.
    grants = Grants(egress=("localhost", "127.0.0.1:1"))
    assert refused(guest_fetch(sandbox, grants, a.url("/json", host="localhost"))).startswith("EgressDenied")


def test_other_schemes_are_refused(sandbox: Sandbox) -> None:
    grants = Grants(egress=("127.0.0.1", "localhost"))
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1:70/", "/relative", "http://"):
        assert "only http and https" in refused(guest_fetch(sandbox, grants, url))


def test_bad_requests_are_refused_cleanly(sandbox: Sandbox, a: Server) -> None:
    grants = Grants(egress=("127.0.0.1",))
    assert "not allowed" in refused(guest_fetch(sandbox, grants, a.url("/json"), method="CONNECT"))
    injected = refused(guest_fetch(sandbox, grants, a.url("/json"), headers={"X-A": "1\r\nX-Injected: 2"}))
    assert injected.startswith("BadRequest")
    assert refused(guest_fetch(sandbox, grants, "http://127.0.0.1:99999/")).startswith("BadRequest")
    assert sum(a.hits.values()) == 0


# -- redirects ----------------------------------------------------------------------


def test_redirect_within_the_allowlist_is_followed(sandbox: Sandbox, a: Server) -> None:
    grants = Grants(egress=(f"127.0.0.1:{a.port}",))
    result = guest_fetch(sandbox, grants, a.url("/redirect?to=/json"))
    assert result["status"] == 200 and json.loads(result["body"]) == {"hello": "world"}
    assert a.hits["/redirect"] == 1 and a.hits["/json"] == 1


def test_redirect_to_a_host_not_on_the_allowlist_is_refused(sandbox: Sandbox, a: Server, b: Server) -> None:
    grants = Grants(egress=(f"127.0.0.1:{a.port}",))
    for code in (301, 302, 303, 307, 308):
        error = refused(guest_fetch(sandbox, grants, a.url(f"/redirect?code={code}&to={b.url('/json')}")))
        assert error.startswith("EgressDenied")
    assert sum(b.hits.values()) == 0


def test_redirect_to_a_name_resolving_to_loopback_is_refused(sandbox: Sandbox, a: Server, b: Server) -> None:
    # "localhost" is on the list, but it resolves to 127.0.0.1, which the list names for a's port only.
    grants = Grants(egress=(f"127.0.0.1:{a.port}", "localhost"))
    error = refused(guest_fetch(sandbox, grants, a.url(f"/redirect?to={b.url('/json', host='localhost')}")))
    assert error.startswith("EgressDenied") and "non-public" in error
    assert sum(b.hits.values()) == 0
    # To a's own port the explicit address covers it.
    result = guest_fetch(sandbox, grants, a.url(f"/redirect?to={a.url('/json', host='localhost')}"))
    assert result["status"] == 200 and a.hits["/json"] == 1


def test_redirect_to_another_scheme_is_refused(sandbox: Sandbox, a: Server) -> None:
    grants = Grants(egress=("127.0.0.1",))
    assert "only http and https" in refused(guest_fetch(sandbox, grants, a.url("/redirect?to=file:///etc/passwd")))


def test_redirect_loops_are_cut_off(sandbox: Sandbox, a: Server) -> None:
    grants = Grants(egress=("127.0.0.1",), fetch_max_redirects=3)
    assert "more than 3 redirects" in refused(guest_fetch(sandbox, grants, a.url("/loop")))
    assert a.hits["/loop"] == 4


# -- size and time limits -------------------------------------------------------------


def test_response_larger_than_the_limit_is_refused(sandbox: Sandbox, a: Server) -> None:
    grants = Grants(egress=("127.0.0.1",), fetch_max_bytes=50_000)
    assert guest_fetch(sandbox, grants, a.url("/big?n=50000"))["body"] == "b" * 50_000
    assert refused(guest_fetch(sandbox, grants, a.url("/big?n=3000000"))).startswith("ResponseTooLarge")


def test_slow_server_hits_the_fetch_timeout(sandbox: Sandbox, a: Server) -> None:
    grants = Grants(egress=("127.0.0.1",), fetch_timeout_s=0.3)
    started = time.monotonic()
    error = refused(guest_fetch(sandbox, grants, a.url("/slow?s=3")))
    elapsed = time.monotonic() - started
    assert error.startswith("FetchTimeout")
    assert 0.25 <= elapsed < 1.5, elapsed


def test_fetch_cannot_outlast_the_activation_deadline(sandbox: Sandbox, a: Server) -> None:
    grants = Grants(egress=("127.0.0.1",), fetch_timeout_s=30)
    limits = Limits(fuel=2_000_000_000, memory_bytes=64 << 20, deadline_s=0.5)
    started = time.monotonic()
    outcome: Outcome = sandbox.run(
        textwrap.dedent(GUEST), {"payload": {"url": a.url("/slow?s=5")}}, MemJournal(), limits, grants
    )
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, elapsed
    assert not isinstance(outcome, Completed) or "FetchTimeout" in outcome.output, outcome


def test_fetch_in_a_step_body_cannot_outlast_the_step_timeout(sandbox: Sandbox, a: Server) -> None:
    source = f"""
        from tenantflow import fetch

        def run(event, step):
            @step.do("call partner", timeout="300 milliseconds")
            def call():
                return fetch({a.url("/slow?s=5")!r}).text
            return call
        """
    journal = MemJournal()
    grants = Grants(egress=("127.0.0.1",), fetch_timeout_s=30)
    started = time.monotonic()
    outcome = sandbox.run(textwrap.dedent(source), {}, journal, LIMITS, grants)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, elapsed
    assert not isinstance(outcome, Completed), outcome
    [attempt] = journal.attempts_of("call partner")
    assert attempt.error_name == "StepTimeout" and attempt.duration_ms >= 300


# -- the SSRF guard against names that resolve to internal addresses -----------------------


def _resolving_to(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Patch the resolver: each name resolves to the given addresses; returns which of them were looked up.

    Anything else (the IP literals the connection itself resolves) goes to the real resolver.
    """
    looked_up: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        looked_up.append(host)
        infos = []
        for address in answers[host]:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            infos.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return infos

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)  # the module the host's fetch resolves with
    return looked_up


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "10.0.0.5",
        "172.16.9.9",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
    ],
)
def test_name_resolving_to_an_internal_address_is_refused(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    looked_up = _resolving_to(monkeypatch, {"api.partner.test": [address]})
    with pytest.raises(EgressDenied, match="non-public"):
        fetch(Grants(egress=("api.partner.test",)), {"url": "http://api.partner.test/x"})
    assert looked_up == ["api.partner.test"]


def test_names_not_on_the_allowlist_are_not_even_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up = _resolving_to(monkeypatch, {"evil.test": ["93.184.216.34"]})
    with pytest.raises(EgressDenied, match="allowlist"):
        fetch(Grants(egress=("good.test",)), {"url": "http://evil.test/"})
    assert looked_up == []


def test_wildcard_entries_match_subdomains_only(monkeypatch: pytest.MonkeyPatch) -> None:
    _resolving_to(monkeypatch, {"api.example.test": ["10.1.1.1"]})
    grants = Grants(egress=("*.example.test",))
    # On the allowlist (so it is resolved, then refused for its private address) ...
    with pytest.raises(EgressDenied, match="non-public"):
        fetch(grants, {"url": "http://api.example.test/"})
    # ... while look-alikes are not on it at all.
    for url in ("http://example.test/", "http://evilexample.test/", "http://api.example.test.evil/"):
        with pytest.raises(EgressDenied, match="allowlist"):
            fetch(grants, {"url": url})


def test_connection_goes_to_the_checked_address(monkeypatch: pytest.MonkeyPatch, a: Server) -> None:
    """The name is resolved once and the socket connects to that address (no second lookup to rebind)."""
    looked_up = _resolving_to(monkeypatch, {"internal.test": ["127.0.0.1"]})
    grants = Grants(egress=("internal.test", "127.0.0.1"))
    reply = json.loads(fetch(grants, {"url": f"http://internal.test:{a.port}/echo", "method": "POST", "body": "x"}))
    assert reply["status"] == 201
    assert json.loads(reply["body"])["host"] == f"internal.test:{a.port}"
    assert looked_up == ["internal.test"]


def test_mixed_answers_connect_only_to_a_public_address(monkeypatch: pytest.MonkeyPatch) -> None:
    _resolving_to(monkeypatch, {"mixed.test": ["10.0.0.1", "93.184.216.34"]})
    assert fetch_module._resolve(Grants(egress=("mixed.test",)), "mixed.test", 80) == "93.184.216.34"


def test_ipv6_entries_with_and_without_brackets(monkeypatch: pytest.MonkeyPatch, a: Server) -> None:
    # Nothing listens on [::1]:port (the servers bind 127.0.0.1 only): allowed means "tried to connect".
    url = f"http://[::1]:{a.port}/json"
    for entry in ("::1", "[::1]", f"[::1]:{a.port}"):
        with pytest.raises(FetchError) as caught:
            fetch(Grants(egress=(entry,)), {"url": url})
        assert not isinstance(caught.value, EgressDenied), (entry, caught.value)
    with pytest.raises(EgressDenied):
        fetch(Grants(egress=("[::1]:1",)), {"url": url})


def test_host_level_limits_raise_typed_errors(a: Server) -> None:
    grants = Grants(egress=("127.0.0.1",), fetch_timeout_s=0.2, fetch_max_bytes=10)
    with pytest.raises(FetchTimeout):
        fetch(grants, {"url": a.url("/slow?s=2")})
    with pytest.raises(ResponseTooLarge):
        fetch(grants, {"url": a.url("/big?n=11")})


@contextlib.contextmanager
def trickling_server(interval: float) -> Iterator[int]:
    """A server on 127.0.0.1 that answers headers, then one body byte every `interval` seconds."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                for _ in range(1000):
                    if stop.wait(interval):
                        break
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_a_trickling_server_cannot_outlast_the_total_deadline(sandbox: Sandbox) -> None:
    with trickling_server(0.1) as port:
        grants = Grants(egress=(f"127.0.0.1:{port}",), fetch_timeout_s=1.0)
        started = time.monotonic()
        result = guest_fetch(sandbox, grants, f"http://127.0.0.1:{port}/")
        elapsed = time.monotonic() - started
    assert "FetchTimeout" in refused(result)
    assert elapsed < 1.5


def test_a_fetch_ends_at_the_activation_deadline(sandbox: Sandbox) -> None:
    with trickling_server(0.1) as port:
        grants = Grants(egress=(f"127.0.0.1:{port}",), fetch_timeout_s=30.0)
        limits = Limits(fuel=2_000_000_000, memory_bytes=64 << 20, deadline_s=1)
        started = time.monotonic()
        outcome = sandbox.run(
            textwrap.dedent(GUEST), {"payload": {"url": f"http://127.0.0.1:{port}/"}}, MemJournal(), limits, grants
        )
        elapsed = time.monotonic() - started
    assert elapsed < 1.5, outcome


def test_cancel_ends_a_fetch_in_flight(sandbox: Sandbox) -> None:
    with trickling_server(0.1) as port:
        grants = Grants(egress=(f"127.0.0.1:{port}",), fetch_timeout_s=30.0)
        cancel = threading.Event()
        timer = threading.Timer(0.3, cancel.set)
        timer.start()
        started = time.monotonic()
        outcome = sandbox.run(
            textwrap.dedent(GUEST),
            {"payload": {"url": f"http://127.0.0.1:{port}/"}},
            MemJournal(),
            Limits(deadline_s=20),
            grants,
            cancel,
        )
        elapsed = time.monotonic() - started
        timer.join()
    assert isinstance(outcome, Failed) and outcome.error.name == "Cancelled", outcome
    assert elapsed < 0.3 + 0.2
