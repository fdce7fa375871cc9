"""Chat: retrieval (:mod:`~service.chat.retriever`, :mod:`~service.chat.fusion`), the answering step
(:mod:`~service.chat.answering`) and the one flow over both (:mod:`~service.chat.flow`)."""

from service.chat.answering import Answering
from service.chat.answers import AnswerDelta, AnswerDone, AnswerRecord
from service.chat.flow import Chat
from service.chat.fusion import weighted_fusion
from service.chat.question import Question
from service.chat.retriever import Retriever

__all__ = ["AnswerDelta", "AnswerDone", "AnswerRecord", "Answering", "Chat", "Question", "Retriever", "weighted_fusion"]
