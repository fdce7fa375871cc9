"""A typed Python client for the ragwatch API.

    from ragwatch_client import Client

    with Client("http://127.0.0.1:8000", token=token) as client:
        kb = client.knowledge_bases.create("handbook")
        client.documents.upload_folder(kb.id, "handbook/")
        print(client.chat(kb.id, "How many vacation days do I get?").answer)

:class:`Client` sends with httpx and blocks; :class:`AsyncClient` has the same methods, awaited. Answers are
msgspec Structs; errors are :class:`RagwatchError` and its subclasses.
"""

from ragwatch_client._api import DocumentOptions, UploadOptions
from ragwatch_client._async_client import AsyncClient
from ragwatch_client._client import Client
from ragwatch_client._errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RagwatchError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    UnexpectedResponseError,
    UnprocessableError,
    UnsupportedMediaTypeError,
)
from ragwatch_client._files import SUFFIXES, FileInput, document_id_for, supported_files
from ragwatch_client._models import (
    AnswerDelta,
    AnswerDone,
    ChatEvent,
    ChatResponse,
    Conversation,
    DocumentCreated,
    DocumentDetail,
    DocumentSummary,
    FeedbackAccepted,
    KnowledgeBase,
    KnowledgeBaseDetail,
    Page,
    Passage,
    Problem,
    Reindexed,
    SearchResults,
    Turn,
    UploadResult,
    Usage,
)

__all__ = [
    "SUFFIXES",
    "APIConnectionError",
    "APITimeoutError",
    "AnswerDelta",
    "AnswerDone",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "ChatEvent",
    "ChatResponse",
    "Client",
    "ConflictError",
    "Conversation",
    "DocumentCreated",
    "DocumentDetail",
    "DocumentOptions",
    "DocumentSummary",
    "FeedbackAccepted",
    "FileInput",
    "KnowledgeBase",
    "KnowledgeBaseDetail",
    "NotFoundError",
    "Page",
    "Passage",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Problem",
    "RagwatchError",
    "RateLimitError",
    "Reindexed",
    "SearchResults",
    "ServerError",
    "ServiceUnavailableError",
    "Turn",
    "UnexpectedResponseError",
    "UnprocessableError",
    "UnsupportedMediaTypeError",
    "UploadOptions",
    "UploadResult",
    "Usage",
    "document_id_for",
    "supported_files",
]
