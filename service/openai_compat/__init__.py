"""OpenAI-compatible routes over knowledge bases: ``GET /v1/models`` and ``POST /v1/chat/completions``."""

from service.openai_compat.completions import Completions
from service.openai_compat.shapes import CompletionRequest, ModelList

__all__ = ["CompletionRequest", "Completions", "ModelList"]
