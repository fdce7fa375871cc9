"""Plain text and Markdown: parsed in the service's own process (linear in the text, nothing to guard against).

Markdown keeps its ATX headings (``#`` to ``######``, outside code fences) as the section path of what follows
them; each heading line stays in the text of its section, where retrieval can match it.
"""

from __future__ import annotations

import re

from service.chunking import Block
from service.parsing.model import Budget, Parsed, ParseLimits

__all__ = ["parse_markdown", "parse_text"]

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def parse_text(text: str, limits: ParseLimits) -> Parsed:
    return Parsed(blocks=(Block(Budget(limits).spend(text)),))


def parse_markdown(text: str, limits: ParseLimits) -> Parsed:
    budget = Budget(limits)
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    fence: str | None = None

    def flush() -> None:
        body = "\n".join(lines).strip()
        if body:
            blocks.append(Block(budget.spend(body), section=" > ".join(name for _, name in path) or None))
        lines.clear()

    for line in text.splitlines():
        opened = _FENCE.match(line)
        if opened is not None:
            fence = opened.group(1) if fence is None else (None if opened.group(1) == fence else fence)
        heading = _HEADING.match(line) if fence is None and opened is None else None
        if heading is not None:
            flush()
            level, name = len(heading.group(1)), heading.group(2).strip()
            path = [(depth, above) for depth, above in path if depth < level] + [(level, name)]
        lines.append(line)
    flush()
    return Parsed(blocks=tuple(blocks))
