"""Turning an uploaded file into text blocks that know their page and section.

- :mod:`~service.parsing.formats`: which format a file is in, from its content and its name.
- :mod:`~service.parsing.text`: plain text and Markdown, parsed in the service's process.
- :mod:`~service.parsing.pdf`, :mod:`~service.parsing.docx`, :mod:`~service.parsing.html`: parsed in parser
  processes (:mod:`~service.parsing.worker`, :mod:`~service.parsing.pool`), with a time and a memory limit.
- :mod:`~service.parsing.model`: what parsing produces (:class:`Parsed`) and refuses (:class:`Refused`).

Nothing here imports the rest of the service, so a parser process loads only what parsing needs.
"""
