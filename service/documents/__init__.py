"""Documents: what an ingest request submitted (:mod:`~service.documents.submissions`), uploaded files parsed
(:mod:`~service.documents.uploads`), and the service that chunks, embeds and writes them
(:mod:`~service.documents.service`)."""

from service.documents.service import Documents
from service.documents.submissions import FileSubmission, JsonSubmission, NewDocument, Submission
from service.documents.uploads import Uploads

__all__ = ["Documents", "FileSubmission", "JsonSubmission", "NewDocument", "Submission", "Uploads"]
