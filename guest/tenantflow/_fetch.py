"""`fetch`: HTTP through the host, to hosts on the tenant's egress allowlist only."""

from __future__ import annotations

import json
from typing import Any

from tenantflow import transport as _transport
from tenantflow._errors import CapabilityError
from tenantflow.transport import Failure


class Response:
    """The answer to `fetch`."""

    def __init__(self, status: int, headers: dict[str, str], text: str) -> None:
        self.status = status
        self.headers = headers
        self.text = text

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.text)

    def __repr__(self) -> str:
        return f"Response(status={self.status})"


def fetch(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: str | bytes | None = None,
) -> Response:
    """HTTP through the host, to hosts on the tenant's egress allowlist only."""
    answer = _transport.current().call("fetch", _request(url, method, headers, body))
    if isinstance(answer, Failure):
        raise CapabilityError(f"{answer.name}: {answer.message}")
    return _response(answer)


async def fetch_async(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: str | bytes | None = None,
) -> Response:
    """`fetch`, awaited: other tasks run while the host makes the request (e.g. five model calls at once with
    `asyncio.gather`)."""
    import asyncio  # loaded by async code only: the snapshot stays small

    from tenantflow._loop import HostLoop

    request = _request(url, method, headers, body)
    loop = asyncio.get_running_loop()
    if isinstance(loop, HostLoop):
        return _response(await loop.call("fetch", request))
    # Outside the sandbox (tenantflow.testing), on asyncio's own loop: the transport's call in a thread.
    answer = await asyncio.to_thread(_transport.current().call, "fetch", request)
    if isinstance(answer, Failure):
        raise CapabilityError(f"{answer.name}: {answer.message}")
    return _response(answer)


def _request(url: str, method: str, headers: dict[str, str] | None, body: str | bytes | None) -> str:
    if isinstance(body, bytes):
        body = body.decode()
    return json.dumps({"url": url, "method": method, "headers": headers or {}, "body": body})


def _response(answer: str) -> Response:
    data = json.loads(answer)
    return Response(data["status"], data["headers"], data["body"])
