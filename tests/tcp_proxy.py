"""A slow TCP proxy for Redis: every chunk of bytes, either way, arrives ``delay_ms`` later than it was sent.

It runs an asyncio loop in a background thread, between the service and a real redis-server. Each command
then takes at least two delays to answer, so a test can cancel a caller while its command is on the wire
or its reply is still on the way back: the moment a client without cancellation safety would leave that
reply on a pooled connection for the next caller to read (redis-py CVE-2023-28858). Delays add latency, not
throughput limits: chunks are scheduled as they arrive, and each direction keeps its order.

``interrupted`` counts the connections that the client side closed while waiting for a reply (it had sent
bytes after the last ones it received): with redis-py, a command cancelled in the middle.

Use it as a context manager: ``with SlowProxy(redis_server.url, delay_ms=10) as proxy: ... proxy.url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = ["SlowProxy"]

T = TypeVar("T")


class SlowProxy:
    """A proxy on a free port of 127.0.0.1 to the Redis server of ``upstream_url`` (``redis://host:port/db``).

    ``url`` is ``upstream_url`` with the proxy's address: the same database, reached through the proxy.
    ``delay_ms`` may be changed at any time; it applies to the chunks read after the change.
    """

    def __init__(self, upstream_url: str, delay_ms: float) -> None:
        parts = urlsplit(upstream_url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"expected redis://host:port/db, got {upstream_url!r}")
        self._upstream = (parts.hostname, parts.port)
        self._parts = parts
        self.delay_ms = delay_ms
        self.url = ""
        """The proxied Redis URL, once started."""
        self.connections = 0
        """Connections accepted so far."""
        self.interrupted = 0
        self.writes_to_server = 0
        """Chunks the clients sent towards Redis: one per round trip (a pipeline goes out as one write)."""
        """Connections the client closed while a reply was still due (see the module docstring)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="slow-redis-proxy")
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    def start(self) -> SlowProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, "127.0.0.1", 0))
        port = self._server.sockets[0].getsockname()[1]
        netloc = f"{self._parts.username}@" if self._parts.username else ""
        self.url = urlunsplit(self._parts._replace(netloc=f"{netloc}127.0.0.1:{port}"))
        return self

    def stop(self) -> None:
        """Close the listening socket and every proxied connection, then end the thread."""
        if self._thread.is_alive():
            self._call(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_closed():
            self._loop.close()

    def __enter__(self) -> SlowProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the proxy's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=10)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
            connection = _Connection()
            await asyncio.gather(
                self._pump(client_reader, upstream_writer, connection, towards_server=True),
                self._pump(upstream_reader, client_writer, connection, towards_server=False),
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
            self._handlers.discard(task)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: _Connection,
        *,
        towards_server: bool,
    ) -> None:
        """Copy ``reader`` to ``writer``, each chunk ``delay_ms`` after it was read; at the end, close ``writer``."""
        loop = asyncio.get_running_loop()
        due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                when, data = await due.get()
                if not data:
                    return
                await asyncio.sleep(max(when - loop.time(), 0))
                writer.write(data)
                await writer.drain()
                if not towards_server:
                    connection.awaiting_reply = False

        delivering = asyncio.create_task(deliver())
        # A write to a peer that has gone fails the delivery; that is the end of this direction, not an error.
        delivering.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            while data := await _read(reader):
                if towards_server:
                    connection.awaiting_reply = True
                    self.writes_to_server += 1
                due.put_nowait((loop.time() + self.delay_ms / 1000, data))
            if towards_server and connection.awaiting_reply:
                self.interrupted += 1
            due.put_nowait((0.0, b""))
            await asyncio.wait({delivering})
        finally:
            delivering.cancel()
            writer.close()


class _Connection:
    """What one proxied connection's two directions share."""

    def __init__(self) -> None:
        self.awaiting_reply = False


async def _read(reader: asyncio.StreamReader) -> bytes:
    """The next chunk, or ``b""`` at the end of the stream (a reset counts as its end)."""
    try:
        return await reader.read(65536)
    except OSError:
        return b""
