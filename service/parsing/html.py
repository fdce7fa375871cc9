"""HTML: the main text of a page, without scripts, styles, navigation, headers and footers; its headings as the
section path. Runs in a parser process.

trafilatura (Apache-2.0) finds the main content. It keeps headings only when the page marks its content
(``<main>``, ``<article>``…) and drops pages too short to judge, so when it returns nothing, or no heading of a
page that has headings, a plain walk of the page with lxml (the same boilerplate dropped) takes its place.
Neither ever fetches anything: the page is a string.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import lxml.etree
import lxml.html
import trafilatura

from service.chunking import Block
from service.parsing.model import Budget, Parsed, ParseLimits, Refused

__all__ = ["parse_html"]

logging.getLogger("trafilatura").setLevel(logging.CRITICAL)  # it logs what it discards as warnings and errors
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_BLOCKS = {"p", "li", "pre", "blockquote", "td", "th", "dt", "dd", "figcaption", "caption"}
_BOILERPLATE = ("script", "style", "noscript", "template", "svg", "nav", "header", "footer", "aside", "form")
_HIDDEN = "//*[@role='navigation' or @role='banner' or @role='contentinfo' or @hidden or @aria-hidden='true']"
_FLUSHING = {"div", "section", "article", "main", "ul", "ol", "table", "tr", "br", "body"}


class _Sections:
    """The heading path as a page is read, and the blocks found under it."""

    def __init__(self, budget: Budget) -> None:
        self.blocks: list[Block] = []
        self._path: list[tuple[int, str]] = []
        self._budget = budget

    def heading(self, level: int, text: str) -> None:
        self._path = [(depth, name) for depth, name in self._path if depth < level] + [(level, text)]
        self.add(text)

    def add(self, text: str) -> None:
        if text.strip():
            section = " > ".join(name for _, name in self._path) or None
            self.blocks.append(Block(self._budget.spend(text), section=section))


def parse_html(text: str, limits: ParseLimits) -> Parsed:
    try:
        blocks = _main_content(text, limits)
        if not blocks or (re.search(r"<h[1-6][\s>]", text, re.IGNORECASE) and all(b.section is None for b in blocks)):
            blocks = _walk(text, limits) or blocks
    except (lxml.etree.LxmlError, ValueError) as exc:
        raise Refused("unreadable", f"The HTML cannot be read ({type(exc).__name__}).") from None
    if not blocks:
        raise Refused("unreadable", "The HTML page holds no text.")
    return Parsed(blocks=tuple(blocks))


def _main_content(text: str, limits: ParseLimits) -> list[Block]:
    xml = trafilatura.extract(
        text,
        output_format="xml",
        include_tables=True,
        include_comments=False,
        favor_recall=True,
        with_metadata=False,
        deduplicate=False,
    )
    if not xml:
        return []
    main = lxml.etree.fromstring(xml.encode()).find("main")
    sections = _Sections(Budget(limits))
    for element in main if main is not None else []:
        if element.tag == "head":
            level = int((element.get("rend") or "h2").removeprefix("h") or 2)
            sections.heading(level, _words(element))
        elif element.tag == "table":
            rows = [" | ".join(_words(cell) for cell in row.iter("cell")) for row in element.iter("row")]
            sections.add("\n".join(rows))
        elif element.tag == "list":
            sections.add("\n".join(f"- {_words(item)}" for item in element.iter("item")))
        else:
            sections.add(_text(element) if element.tag == "code" else _words(element))
    return sections.blocks


def _walk(text: str, limits: ParseLimits) -> list[Block]:
    """Every heading and block of text of the page, in order, once the boilerplate is dropped."""
    tree: Any = lxml.html.document_fromstring(text)  # HtmlElements (drop_tree, text_content): not in the stubs
    for element in tree.xpath(_HIDDEN):
        element.drop_tree()
    for tag in _BOILERPLATE:
        for element in list(tree.iter(tag)):
            element.drop_tree()
    sections = _Sections(Budget(limits))
    loose: list[str] = []

    def flush() -> None:
        sections.add(" ".join(" ".join(loose).split()))
        loose.clear()

    def visit(element: Any) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""
        if tag in _HEADINGS:
            flush()
            sections.heading(_HEADINGS[tag], " ".join(element.text_content().split()))
        elif tag in _BLOCKS and not any(
            isinstance(inner.tag, str) and (inner.tag in _BLOCKS or inner.tag in _HEADINGS)
            for inner in element.iterdescendants()
        ):
            flush()
            sections.add(element.text_content() if tag == "pre" else " ".join(element.text_content().split()))
        else:
            if element.text:
                loose.append(element.text)
            for child in element:
                visit(child)
            if tag in _FLUSHING:
                flush()
        if element.tail:
            loose.append(element.tail)

    body = tree.find("body")
    visit(body if body is not None else tree)
    flush()
    return sections.blocks


def _text(element: Any) -> str:
    return "".join(str(piece) for piece in element.itertext())


def _words(element: Any) -> str:
    return " ".join(_text(element).split())
