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
    if isinstance(body, bytes):
        body = body.decode()
    request = {"url": url, "method": method, "headers": headers or {}, "body": body}
    answer = _transport.current().call("fetch", json.dumps(request))
    if isinstance(answer, Failure):
        raise CapabilityError(f"{answer.name}: {answer.message}")
    data = json.loads(answer)
    return Response(data["status"], data["headers"], data["body"])
