"""The parser processes: a few long-lived worker processes, each parsing one file at a time, with a time limit.

Written here rather than with ``concurrent.futures.ProcessPoolExecutor`` because a file that overruns its time
limit must be stopped by ending its process, and an executor can neither tell which process runs a task nor
end one without breaking every other task in flight (Python 3.14 adds ``terminate_workers``, for the whole
pool only). Here each worker has its own socket: the one that overran is killed and replaced, the others go on.

A worker is a fresh interpreter (``python -m service.parsing.worker``), not a fork of the service: it inherits
none of the service's threads, locks or open files. Workers start on first use, so deployments that ingest only
text never pay for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection

from service.parsing.model import Format, Parsed, ParseLimits, Refused
from service.parsing.worker import READY, Request, decode_reply, encode

__all__ = ["ParserPool"]

logger = logging.getLogger("ragwatch.parsing")
_STARTUP_S = 60.0


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    connection: Connection


class ParserPool:
    def __init__(self, workers: int, timeout_s: float, max_memory_bytes: int) -> None:
        self._size = workers
        self._timeout_s = timeout_s
        self._max_memory_bytes = max_memory_bytes
        self._idle: asyncio.Queue[_Worker] | None = None
        self._started = 0
        self._replacing: set[asyncio.Task[None]] = set()

    async def parse(self, format_: Format, content: bytes, limits: ParseLimits) -> Parsed:
        """The parsed file, or :class:`Refused`: the file's own refusal, ``timeout`` past the time limit, or
        ``unreadable`` if the parser process died on it."""
        worker = await self._take()
        healthy = False
        try:
            request = encode(Request(format=format_, content=content, limits=limits))
            await asyncio.to_thread(worker.connection.send_bytes, request)
            reply = decode_reply(await asyncio.wait_for(self._reply(worker), self._timeout_s))
            healthy = True
        except TimeoutError:
            raise Refused(
                "timeout", f"Parsing the file took longer than RAGWATCH_PARSE_TIMEOUT_S ({self._timeout_s:g} s)."
            ) from None
        except (EOFError, OSError, ValueError) as exc:  # the process died, or answered what is not a reply
            logger.warning(
                "a parser process failed on a %s file (%s: %s); starting another", format_, type(exc).__name__, exc
            )
            raise Refused("unreadable", "The parser process ended while parsing the file.") from None
        finally:
            self._give_back(worker, healthy)
        if reply.parsed is None:
            raise Refused(reply.refusal or "unreadable", reply.detail or "The file could not be parsed.")
        return reply.parsed

    async def _take(self) -> _Worker:
        if self._idle is None:
            self._idle = asyncio.Queue()
        if self._idle.empty() and self._started < self._size:
            self._started += 1
            try:
                return await asyncio.to_thread(self._spawn)
            except BaseException:
                self._started -= 1
                raise
        return await self._idle.get()

    def _spawn(self) -> _Worker:
        """A new worker, once it has loaded its parsers (which no file's time limit should pay for)."""
        ours, theirs = socket.socketpair()
        with theirs:
            process = subprocess.Popen(  # noqa: S603 - this interpreter, our own module, our own arguments
                [sys.executable, "-m", "service.parsing.worker", str(theirs.fileno()), str(self._max_memory_bytes)],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        worker = _Worker(process, Connection(ours.detach()))
        try:
            if not worker.connection.poll(_STARTUP_S) or worker.connection.recv_bytes() != READY:
                raise OSError(f"a parser process did not start within {_STARTUP_S:g} s")
        except (EOFError, OSError):
            _end(worker)
            raise
        return worker

    async def _reply(self, worker: _Worker) -> bytes:
        """The worker's answer, read in a thread (the socket stays blocking: an event loop's reader would make it
        non-blocking, and a reply arriving in parts would then fail half read). Past the time limit the worker is
        killed, which ends the read."""
        return await asyncio.to_thread(worker.connection.recv_bytes)

    def _give_back(self, worker: _Worker, healthy: bool) -> None:
        """Return a worker that answered; end one that did not (it overran or died) and start its successor."""
        if healthy:
            self._put(worker)
            return
        _end(worker)
        task = asyncio.get_running_loop().create_task(self._replace())
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    async def _replace(self) -> None:
        try:
            self._put(await asyncio.to_thread(self._spawn))
        except OSError:  # no process can start now: the next parse starts one instead
            self._started -= 1

    def _put(self, worker: _Worker) -> None:
        if self._idle is not None:
            self._idle.put_nowait(worker)

    async def aclose(self) -> None:
        """End every worker; one busy parsing when the service stops ends when its socket closes."""
        for task in list(self._replacing):
            with contextlib.suppress(Exception):
                await task
        while self._idle is not None and not self._idle.empty():
            _end(self._idle.get_nowait())


def _end(worker: _Worker) -> None:
    with contextlib.suppress(OSError):
        worker.connection.close()
    if worker.process.poll() is None:
        worker.process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        worker.process.wait(timeout=5)
