"""`tenantflow serve`'s listening socket (`server.bind`), as asyncio (under uvicorn) accepts connections on it."""

from __future__ import annotations

import asyncio
import socket

from tenantflow.runtime.http.server import bind


async def _accepted_nodelay() -> int:
    """TCP_NODELAY of a connection accepted on `bind`'s socket, read on the server's side."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[int] = loop.create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    sock = bind("127.0.0.1", 0)
    server = await loop.create_server(Probe, sock=sock)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        try:
            return await asyncio.wait_for(accepted, 5)
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_accepted_connections_send_without_waiting_for_acks() -> None:
    # With Nagle's algorithm on, uvicorn's second write of a response (its body after its head) waits for
    # the client's delayed ACK: ~40 ms on every keep-alive request.
    assert asyncio.run(_accepted_nodelay()) != 0
