"""What a cache keeps under a key, and how a reply from the backend is checked before it is believed.

Each entry carries its own key, checked on every read, so a reply that reached the wrong request (the failure
behind redis-py CVE-2023-28858) is never served: it counts as an error and is ignored. Retrieval and answer
entries also carry the generation of their knowledge base they were computed in.
"""

from __future__ import annotations

from typing import TypeGuard

import msgspec

__all__ = ["Entry", "decode_entry", "encode_entry", "is_mget_reply"]


class Entry(msgspec.Struct, array_like=True, frozen=True):
    key: str
    generation: str
    """The knowledge base's generation the value was computed in; empty for entries of no knowledge base."""
    value: bytes


encode_entry = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Entry).decode


def decode_entry(raw: bytes) -> Entry | None:
    """The entry in ``raw``, or ``None`` when ``raw`` is not an entry at all."""
    try:
        return _decode(raw)
    except msgspec.DecodeError:
        return None


def is_mget_reply(replies: object, count: int) -> TypeGuard[list[bytes | None]]:
    """Whether ``replies`` has the shape of an ``MGET`` of ``count`` keys (a list of bytes or nil)."""
    return (
        isinstance(replies, list)
        and len(replies) == count
        and all(reply is None or isinstance(reply, bytes) for reply in replies)
    )
