"""A TCP proxy on loopback that delays every chunk by a fixed time in each direction, like a network link.

On loopback a request and its reply take microseconds; a mail server across a
network takes tens of milliseconds. The proxy adds ``one_way_delay_seconds``
to every chunk it forwards, in both directions, and keeps their order. It does
not limit bandwidth, so pipelined commands overlap as they would on a real link.

Example::

    with LatencyProxy("127.0.0.1", imap_port, one_way_delay_seconds=0.025) as proxy:
        connect_to("127.0.0.1", proxy.port)   # 50 ms round trip
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future

from stack.ports import LOOPBACK

__all__ = ["LatencyProxy"]

CHUNK_BYTES = 64 * 1024
START_TIMEOUT_SECONDS = 10.0


class LatencyProxy:
    """Forward connections on a free loopback port to ``target_host:target_port``, each chunk delayed."""

    def __init__(self, target_host: str, target_port: int, one_way_delay_seconds: float) -> None:
        if one_way_delay_seconds < 0:
            raise ValueError(f"one_way_delay_seconds must not be negative, got {one_way_delay_seconds}")
        self.target = (target_host, target_port)
        self.delay = one_way_delay_seconds
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="latency-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> None:
        self._thread.start()
        started: Future[asyncio.AbstractServer] = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, LOOPBACK, 0), self._loop
        )
        self._server = started.result(timeout=START_TIMEOUT_SECONDS)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=START_TIMEOUT_SECONDS)

    def __enter__(self) -> LatencyProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                self._forward(client_reader, server_writer),
                self._forward(server_reader, client_writer),
            )
        finally:
            for writer in (client_writer, server_writer):
                writer.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy ``reader`` to ``writer``, each chunk sent ``delay`` seconds after it arrived."""
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def receive() -> None:
            while True:
                try:
                    data = await reader.read(CHUNK_BYTES)
                except (ConnectionError, OSError):
                    data = b""
                await chunks.put((self._loop.time() + self.delay, data))
                if not data:
                    return

        receiving = asyncio.create_task(receive())
        try:
            while True:
                due, data = await chunks.get()
                await asyncio.sleep(max(0.0, due - self._loop.time()))
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            receiving.cancel()
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()
                else:
                    writer.close()
