"""Documents: what an ingest request submitted (:mod:`~service.documents.submissions`) and the service that
parses, chunks, embeds and writes it (:mod:`~service.documents.service`)."""

from service.documents.service import Documents
from service.documents.submissions import FileSubmission, JsonSubmission, NewDocument, Submission

__all__ = ["Documents", "FileSubmission", "JsonSubmission", "NewDocument", "Submission"]
