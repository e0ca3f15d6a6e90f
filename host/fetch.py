"""The `fetch` capability: HTTP through the host, to the tenant's egress allowlist only.

Server-side request forgery guard: the name is resolved once, every address is
checked, and the connection goes to the checked address (no second lookup). An
address that is loopback, private, link-local or otherwise not global is
refused unless the allowlist names that address itself. Redirects are followed
by hand and every hop is checked again.

One total deadline covers the whole exchange (connect, redirects, headers, body): a watchdog
shuts the socket down when it passes, or when the activation is cancelled, so a server that
trickles a byte at a time cannot hold the worker past it (socket timeouts alone are per read).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

from tenantflow.host.failures import FailureName
from tenantflow.host.limits import Grants

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class FetchError(Exception):
    """A fetch that could not be made or completed; the guest sees `failure` as the call's error name."""

    failure: ClassVar[FailureName] = FailureName.FETCH_ERROR


class EgressDenied(FetchError):
    """The destination is not on the tenant's allowlist, or resolves to a refused address."""

    failure = FailureName.EGRESS_DENIED


class FetchTimeout(FetchError):
    """The fetch took longer than the tenant's fetch timeout."""

    failure = FailureName.FETCH_TIMEOUT


class ResponseTooLarge(FetchError):
    """The response body is larger than the tenant's limit."""

    failure = FailureName.RESPONSE_TOO_LARGE


def _parse_entry(entry: str) -> tuple[str, str]:
    """An allowlist entry as (name, port or ""): "host", "host:port", "1.2.3.4", "::1", "[::1]", "[::1]:port"."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        name, _, rest = entry[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else ""
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        return name, port
    return entry, ""


def _allowed_entry(grants: Grants, host: str, port: int) -> bool:
    for entry in grants.egress:
        name, entry_port = _parse_entry(entry)
        if entry_port and entry_port != str(port):
            continue
        if name == host or (name.startswith("*.") and host.endswith(name[1:])):
            return True
    return False


def _named_literally(grants: Grants, ip: str, port: int) -> bool:
    for entry in grants.egress:
        name, entry_port = _parse_entry(entry)
        if name == ip and (not entry_port or entry_port == str(port)):
            return True
    return False


def _resolve(grants: Grants, host: str, port: int) -> str:
    """The checked address to connect to, or EgressDenied."""
    if not _allowed_entry(grants, host, port):
        raise EgressDenied(f"{host}:{port} is not on this tenant's egress allowlist")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise FetchError(f"cannot resolve {host}: {error}") from None
    for info in infos:
        address = str(info[4][0])
        ip = ipaddress.ip_address(address)
        if ip.is_global or _named_literally(grants, address, port):
            return address
    raise EgressDenied(f"{host} resolves to a non-public address; name that address in the allowlist to allow it")


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class _Watchdog:
    """Shuts the current connection's socket down at the deadline or on cancel."""

    def __init__(self, deadline: float, cancel: threading.Event | None) -> None:
        self.deadline = deadline
        self.cancel = cancel or threading.Event()
        self.fired = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="tenantflow-fetch-watchdog", daemon=True)
        self._thread.start()

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.fired:
                self._shut()

    def _shut(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        while not self._done.is_set():
            left = self.deadline - time.monotonic()
            if left <= 0 or self.cancel.is_set():
                with self._lock:
                    self.fired = True
                    self._shut()
                return
            self._done.wait(min(left, 0.05))

    def close(self) -> None:
        self._done.set()
        self._thread.join()


def fetch(grants: Grants, request: dict[str, Any], cancel: threading.Event | None = None) -> str:
    """Perform the request; the JSON response {status, headers, body} or a FetchError."""
    deadline = time.monotonic() + grants.fetch_timeout_s
    watchdog = _Watchdog(deadline, cancel)
    try:
        return _fetch(grants, request, deadline, watchdog)
    except FetchError:
        if watchdog.fired:
            raise FetchTimeout(f"fetch took longer than {grants.fetch_timeout_s:.3g} s (or was cancelled)") from None
        raise
    finally:
        watchdog.close()


def _fetch(grants: Grants, request: dict[str, Any], deadline: float, watchdog: _Watchdog) -> str:
    url = str(request["url"])
    method = str(request.get("method") or "GET").upper()
    if method not in METHODS:
        raise FetchError(f"method {method!r} is not allowed")
    headers = {str(k): str(v) for k, v in dict(request.get("headers") or {}).items()}
    body = request.get("body")
    data = body.encode() if isinstance(body, str) else None
    for _ in range(grants.fetch_max_redirects + 1):
        status, reply_headers, content, location = _one_request(grants, method, url, headers, data, deadline, watchdog)
        if status in (301, 302, 303, 307, 308) and location:
            url = urljoin(url, location)
            if status == 303 or (status in (301, 302) and method == "POST"):
                method, data = "GET", None
            continue
        text = content.decode("utf-8", errors="replace")
        return json.dumps({"status": status, "headers": reply_headers, "body": text})
    raise FetchError(f"more than {grants.fetch_max_redirects} redirects")


def _one_request(
    grants: Grants,
    method: str,
    url: str,
    headers: dict[str, str],
    data: bytes | None,
    deadline: float,
    watchdog: _Watchdog,
) -> tuple[int, dict[str, str], bytes, str | None]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"only http and https URLs can be fetched, not {url!r}")
    host = parts.hostname.lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = _resolve(grants, host, port)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchTimeout(f"fetch took longer than {grants.fetch_timeout_s} s")
    kind = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    connection = kind(host, port, address, remaining)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        connection.connect()
        watchdog.watch(connection.sock)
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        chunks: list[bytes] = []
        size = 0
        while True:
            if connection.sock is not None:
                connection.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = response.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > grants.fetch_max_bytes:
                raise ResponseTooLarge(f"the response is larger than {grants.fetch_max_bytes} bytes")
            if time.monotonic() > deadline:
                raise FetchTimeout(f"fetch took longer than {grants.fetch_timeout_s} s")
            chunks.append(chunk)
        if watchdog.fired:
            raise FetchTimeout(f"fetch took longer than {grants.fetch_timeout_s:.3g} s (or was cancelled)")
        return response.status, dict(response.getheaders()), b"".join(chunks), response.getheader("Location")
    except TimeoutError:
        raise FetchTimeout(f"fetch took longer than {grants.fetch_timeout_s} s") from None
    except (OSError, http.client.HTTPException) as error:
        raise FetchError(f"{type(error).__name__}: {error}") from None
    finally:
        watchdog.watch(None)
        connection.close()
