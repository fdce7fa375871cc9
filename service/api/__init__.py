"""HTTP routes. Handlers stay thin: they read the request and hand it to the one domain service they ask for."""

from service.api.chat import chat
from service.api.conversations import ConversationController
from service.api.documents import DocumentController
from service.api.feedback import feedback
from service.api.health import live, ready
from service.api.knowledge_bases import KnowledgeBaseController
from service.api.metrics import metrics
from service.api.openai_compat import chat_completions, models
from service.api.probes import ProbeController
from service.api.reindex import reindex
from service.api.search import search

__all__ = [
    "ConversationController",
    "DocumentController",
    "KnowledgeBaseController",
    "ProbeController",
    "chat",
    "chat_completions",
    "feedback",
    "live",
    "metrics",
    "models",
    "ready",
    "reindex",
    "search",
]
