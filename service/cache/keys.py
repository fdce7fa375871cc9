"""Cache keys: ``rw:c:{<tenant>}:<cache>:<digest>``, and each knowledge base's generation key.

The digest is a SHA-256 of everything that decides the value (cache, tenant, knowledge base, normalized
question, ``top_k``, models, prompt version). No question or document text is ever part of a key, and keys are
built from the authenticated tenant only, so no request can reach another tenant's entries. The tenant in
braces is a Redis Cluster hash tag: all of a tenant's keys share one slot.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from typing import Literal

__all__ = ["CacheName", "entry_keys", "generation_key", "normalize_question"]

CacheName = Literal["embeddings", "retrieval", "answers"]


def normalize_question(question: str) -> str:
    """The form questions are cached under: Unicode NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", question).casefold().split())


def entry_keys(name: CacheName, tenant_id: str, parts: Sequence[str], kb_id: str | None) -> tuple[str, str | None]:
    """The entry's key, and (with ``kb_id``) its knowledge base's generation key."""
    digest = hashlib.sha256("\x1f".join([name, tenant_id, kb_id or "", *parts]).encode()).hexdigest()
    return f"rw:c:{{{tenant_id}}}:{name}:{digest}", generation_key(tenant_id, kb_id) if kb_id is not None else None


def generation_key(tenant_id: str, kb_id: str) -> str:
    return f"rw:c:{{{tenant_id}}}:gen:{kb_id}"
