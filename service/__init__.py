"""ragwatch: an observability-first, multi-tenant RAG service."""

__version__ = "0.1.0"
