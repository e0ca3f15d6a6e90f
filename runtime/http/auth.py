"""The API key of a request: `Authorization: Bearer <key>`, for the API and the dashboard alike."""

from __future__ import annotations

from starlette.requests import Request
from tenantflow.runtime.errors import Unauthorized

__all__ = ["bearer_key"]


def bearer_key(request: Request, who: str = "the tenant's API key") -> str:
    """The key of an `Authorization: Bearer <key>` header; Unauthorized if there is none."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.strip().partition(" ")
    if not header:
        raise Unauthorized(f"send {who} as 'Authorization: Bearer <key>'")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <key>'")
    return key.strip()
