"""HTTP routes. Handlers stay thin: they read the request, call the pipeline and shape the response."""

from service.api.chat import chat
from service.api.documents import DocumentController
from service.api.health import live, ready
from service.api.knowledge_bases import KnowledgeBaseController

__all__ = ["DocumentController", "KnowledgeBaseController", "chat", "live", "ready"]
