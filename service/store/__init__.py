"""Knowledge bases, documents and chunks in LanceDB, always scoped to one tenant.

- :mod:`~service.store.store`: :class:`Store`, all LanceDB access.
- :mod:`~service.store.records`: what it returns; :mod:`~service.store.tables`: the tables' layouts.
- :mod:`~service.store.filters`: SQL filters built only from validated ids.
- :mod:`~service.store.search`: vector and full-text search; :mod:`~service.store.maintenance`: indexes,
  compaction and clean-up; :mod:`~service.store.erasure`: deleted data erased from disk.
"""

from service.store.filters import sql_literal
from service.store.records import DocumentRecord, KnowledgeBaseRecord, new_id, now
from service.store.store import Store

__all__ = ["DocumentRecord", "KnowledgeBaseRecord", "Store", "new_id", "now", "sql_literal"]
