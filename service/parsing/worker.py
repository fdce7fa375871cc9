"""A parser process: ``python -m service.parsing.worker FD MAX_MEMORY_BYTES`` parses one file at a time for
the service that started it, over the socket ``FD``.

PDF, DOCX and HTML parsing is CPU work on untrusted input. In a process of its own it cannot block the service's
event loop, a file that takes too long is stopped by ending the process, and a file that would take too much
memory (a decompression bomb past the archive check) meets the address-space limit set here instead of the
service's memory. The process imports only the parsers, not the service; requests and replies are typed
msgpack (never pickle), so even a parser that a hostile file took over could only send back a wrong answer.
"""

from __future__ import annotations

import importlib
import resource
import sys
from multiprocessing.connection import Connection

import msgspec

from service.parsing.formats import decode_text
from service.parsing.model import Format, Parsed, ParseLimits, Refusal, Refused

__all__ = ["READY", "Reply", "Request", "decode_reply", "decode_request", "encode", "parse_file", "serve"]


class Request(msgspec.Struct, frozen=True):
    format: Format
    content: bytes
    limits: ParseLimits


class Reply(msgspec.Struct, frozen=True):
    parsed: Parsed | None = None
    refusal: Refusal | None = None
    detail: str = ""


READY = b"ready"
"""What a worker sends once its parsers are loaded, before its first request."""
encode = msgspec.msgpack.Encoder().encode
decode_request = msgspec.msgpack.Decoder(Request).decode
decode_reply = msgspec.msgpack.Decoder(Reply).decode


def parse_file(format_: Format, content: bytes, limits: ParseLimits) -> Parsed:
    """Parse ``content`` of a format that needs a parser process (PDF, DOCX, HTML)."""
    if format_ == "pdf":
        from service.parsing.pdf import parse_pdf  # noqa: PLC0415 - each parser loads its library when needed

        return parse_pdf(content, limits)
    if format_ == "docx":
        from service.parsing.docx import parse_docx  # noqa: PLC0415

        return parse_docx(content, limits)
    from service.parsing.html import parse_html  # noqa: PLC0415

    text = decode_text(content)
    if text is None:
        raise Refused("invalid", "The HTML file is not valid UTF-8 text.")
    return parse_html(text, limits)


def serve(connection: Connection, max_memory_bytes: int) -> None:
    """The process's whole life: answer each request with a :class:`Reply`, until the connection closes."""
    if max_memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (max_memory_bytes, max_memory_bytes))
    for parser in ("pdf", "docx", "html"):  # load the parsers now, not within the first file's time limit
        importlib.import_module(f"service.parsing.{parser}")
    connection.send_bytes(READY)
    while True:
        try:
            request = decode_request(connection.recv_bytes())
        except EOFError:
            return
        connection.send_bytes(encode(_answer(request)))


def _answer(request: Request) -> Reply:
    try:
        return Reply(parsed=parse_file(request.format, request.content, request.limits))
    except Refused as refused:
        return Reply(refusal=refused.reason, detail=refused.detail)
    except MemoryError:
        return Reply(refusal="too_large", detail="Parsing the file needed more memory than a parser may use.")
    except Exception as exc:  # a parser's own bug on this file: the file's refusal, never the process's end
        return Reply(refusal="unreadable", detail=f"The file could not be parsed ({type(exc).__name__}).")


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
