"""Erasing deleted data from disk, which a LanceDB delete alone does not do.

A delete marks rows deleted: their text stays in the data file beside the rows kept, until the file is rewritten.
Compaction rewrites a file only once a tenth of its rows are deleted, so one document deleted from a large
table would stay on disk for good; :func:`rewrite_deleted_rows` rewrites the tables that hold deleted rows.
The old versions still made of the old files are removed later, once older than the clean-up interval
(:mod:`service.store.maintenance` runs both). :func:`delete_orphans` deletes the chunks a knowledge base's
deletion left when a crash came between its two commits (the knowledge base's row, then its chunks).
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

import pyarrow.compute as pc

from service.store.filters import sql_literal
from service.store.writes import retried

__all__ = ["ISSUED_KB_ID", "delete_orphans", "rewrite_deleted_rows"]

logger = logging.getLogger("ragwatch.store")
ISSUED_KB_ID = re.compile(r"kb_[0-9a-f]{20}")
"""The ids :meth:`service.store.Store.create_kb` gives knowledge bases (``new_id("kb")``)."""


async def rewrite_deleted_rows(tables: list[Any]) -> bool:
    """Rewrite every table of ``tables`` whose latest version holds deleted rows; whether any was.

    Updating every row (a column set to itself) copies the rows kept into a new data file, and a data file left
    with no row kept is dropped. It is a LanceDB update, so it conflicts with, and is retried after, a concurrent
    write of the same rows instead of overwriting it. The chunks table's indexes then cover none of its rows:
    the caller indexes them again.
    """
    rewritten = False
    for table in tables:
        latest = (await table.list_versions())[-1]
        deleted = int(latest["metadata"].get("total_deletion_file_rows", 0))
        if deleted:
            column = (await table.schema()).names[-1]
            await retried(functools.partial(table.update, updates_sql={column: column}))
            logger.info("LanceDB maintenance erased %d deleted rows from %s", deleted, table.name)
            rewritten = True
    return rewritten


async def delete_orphans(chunks: Any, knowledge_bases: Any) -> None:
    """Delete the chunks of knowledge bases that are no longer there.

    The chunks are read first, the knowledge bases then at their latest version: a knowledge base is committed
    before its first chunk, so one created meanwhile is never taken for deleted. Only ids the service issues
    count (:data:`ISSUED_KB_ID`): chunks other tools write straight into the table with an id of their own and
    no knowledge base (the retrieval benchmark's) are left alone.
    """
    used = set(pc.unique((await chunks.query().select(["kb_id"]).to_arrow())["kb_id"]).to_pylist())
    await knowledge_bases.checkout_latest()
    known = {row["id"] for row in await knowledge_bases.query().select(["id"]).to_list()}
    orphans = sorted(kb_id for kb_id in used - known if kb_id is not None and ISSUED_KB_ID.fullmatch(kb_id))
    if orphans:
        await retried(lambda: chunks.delete(f"kb_id IN ({', '.join(map(sql_literal, orphans))})"))
        logger.info("LanceDB maintenance deleted the chunks of %d deleted knowledge bases", len(orphans))
