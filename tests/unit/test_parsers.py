"""Each parser, called directly: the text it keeps, where it says the text stands, and what it refuses."""

from __future__ import annotations

import pytest

from service.chunking import Block, chunk_blocks
from service.parsing.docx import parse_docx
from service.parsing.html import parse_html
from service.parsing.model import ParseLimits, Refused
from service.parsing.pdf import parse_pdf
from service.parsing.text import parse_markdown, parse_text
from tests.documents import docx_bytes, encrypt_pdf, image_pdf, text_pdf, zip_bomb_docx

LIMITS = ParseLimits(max_pages=100, max_characters=100_000)
HANDBOOK_PDF = text_pdf([["Cafeteria hours.", "It opens at eight."], [], ["Parking permits come from facilities."]])


def reason(call: object, *args: object) -> str:
    with pytest.raises(Refused) as refused:
        call(*args)  # type: ignore[operator]
    return refused.value.reason


# --- PDF ------------------------------------------------------------------------------------------------------


def test_a_pdf_becomes_one_block_per_page_with_text_numbered_from_one() -> None:
    parsed = parse_pdf(HANDBOOK_PDF, LIMITS)

    assert parsed.pages == 3
    assert parsed.blocks == (
        Block("Cafeteria hours.\nIt opens at eight.", page=1),
        Block("Parking permits come from facilities.", page=3),
    )


def test_a_pdf_locked_with_a_password_is_refused_as_encrypted() -> None:
    assert reason(parse_pdf, encrypt_pdf(HANDBOOK_PDF, "s3cret"), LIMITS) == "encrypted"


@pytest.mark.parametrize("algorithm", ["AES-256", "AES-128", "RC4-128"])
def test_a_pdf_encrypted_without_a_password_is_read(algorithm: str) -> None:
    parsed = parse_pdf(encrypt_pdf(HANDBOOK_PDF, "", algorithm), LIMITS)

    assert parsed.blocks[0].text.startswith("Cafeteria hours.")


def test_a_pdf_of_images_only_needs_ocr() -> None:
    assert reason(parse_pdf, image_pdf(3), LIMITS) == "needs_ocr"


@pytest.mark.parametrize(
    "damaged",
    [HANDBOOK_PDF[: len(HANDBOOK_PDF) // 2], b"%PDF-1.7\n" + bytes(range(256)) * 8, b"%PDF-", HANDBOOK_PDF[:-400]],
)
def test_a_truncated_or_corrupt_pdf_is_unreadable(damaged: bytes) -> None:
    assert reason(parse_pdf, damaged, LIMITS) in ("unreadable", "invalid")


def test_a_pdf_past_the_page_or_character_limit_is_too_large() -> None:
    assert reason(parse_pdf, HANDBOOK_PDF, ParseLimits(max_pages=2, max_characters=100_000)) == "too_large"
    assert reason(parse_pdf, HANDBOOK_PDF, ParseLimits(max_pages=100, max_characters=20)) == "too_large"


# --- DOCX ------------------------------------------------------------------------------------------------------


def test_a_docx_keeps_its_headings_as_the_section_path_and_its_tables_row_by_row() -> None:
    content = docx_bytes(
        [(1, "Install", ["Run the installer."]), (2, "Linux", ["Use apt."]), (1, "Use", ["Open the app."])],
        table=[["Platform", "Command"], ["Debian", "apt install"]],
        title="Manual",
    )

    parsed = parse_docx(content, LIMITS)

    assert [(block.section, block.text) for block in parsed.blocks] == [
        ("Manual", "Manual"),
        ("Manual > Install", "Install"),
        ("Manual > Install", "Run the installer."),
        ("Manual > Install", "Platform | Command\nDebian | apt install"),
        ("Manual > Install > Linux", "Linux"),
        ("Manual > Install > Linux", "Use apt."),
        ("Manual > Use", "Use"),
        ("Manual > Use", "Open the app."),
    ]


def test_a_docx_that_expands_a_thousandfold_is_refused_before_it_is_inflated() -> None:
    assert reason(parse_docx, zip_bomb_docx(), LIMITS) == "too_large"


@pytest.mark.parametrize("content", [b"PK\x03\x04 truncated", b"not a zip at all", bytes(range(256)) * 4])
def test_a_docx_that_is_not_a_zip_is_unreadable(content: bytes) -> None:
    assert reason(parse_docx, content, LIMITS) == "unreadable"


# --- HTML ------------------------------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html><html><head><title>Travel</title><style>p {color: red}</style>
<script>var tracking = "secret";</script></head><body>
<nav><a href="/">Home</a> <a href="/about">About</a></nav>
<header>Company banner</header>
<main><h1>Travel policy</h1><p>Book trains at least two weeks ahead, in second class.</p>
<h2>Hotels</h2><p>Hotels are booked through the travel desk, up to 150 euros a night.</p>
<table><tr><th>City</th><th>Limit</th></tr><tr><td>Paris</td><td>180</td></tr></table></main>
<footer>Copyright and cookie settings</footer></body></html>"""


def test_html_keeps_the_main_text_and_its_headings_and_drops_scripts_navigation_and_footers() -> None:
    parsed = parse_html(PAGE, LIMITS)
    text = "\n".join(block.text for block in parsed.blocks)

    assert "Book trains at least two weeks ahead" in text
    assert "Paris | 180" in text
    for boilerplate in ("tracking", "color: red", "About", "Company banner", "cookie"):
        assert boilerplate not in text
    sections = {block.section for block in parsed.blocks if "Hotels are booked" in block.text}
    assert sections == {"Travel policy > Hotels"}


def test_html_without_marked_content_still_keeps_its_headings() -> None:
    page = "<html><body><div><h2>Setup</h2><p>Run the installer.</p><h3>Linux</h3><p>Use apt.</p></div></body></html>"

    parsed = parse_html(page, LIMITS)

    assert Block("Use apt.", section="Setup > Linux") in parsed.blocks


def test_html_with_no_text_is_unreadable() -> None:
    assert reason(parse_html, "<html><body><script>x()</script></body></html>", LIMITS) == "unreadable"


# --- text and Markdown -----------------------------------------------------------------------------------------


def test_markdown_headings_outside_code_fences_make_the_section_path() -> None:
    markdown = (
        "# Guide\nIntro.\n\n## Install\nRun it.\n```sh\n# a comment, not a heading\n```\n### Linux\napt.\n## Use\nGo."
    )

    parsed = parse_markdown(markdown, LIMITS)

    assert [block.section for block in parsed.blocks] == [
        "Guide",
        "Guide > Install",
        "Guide > Install > Linux",
        "Guide > Use",
    ]
    assert "# a comment, not a heading" in parsed.blocks[1].text


def test_plain_text_is_one_block_within_the_character_limit() -> None:
    assert parse_text("words " * 3, LIMITS).blocks == (Block("words words words "),)
    assert reason(parse_text, "x" * 30, ParseLimits(max_pages=1, max_characters=20)) == "too_large"


# --- chunks keep where they stand -------------------------------------------------------------------------------


def test_chunks_never_straddle_a_page_or_a_section_and_keep_theirs() -> None:
    blocks = [
        Block("One. " * 50, page=1),
        Block("Two.", page=2),
        Block("Intro.", section="A"),
        Block("More.", section="A"),
    ]

    chunks = chunk_blocks(blocks, size=100, overlap=20)

    assert {(chunk.page, chunk.section) for chunk in chunks} == {(1, None), (2, None), (None, "A")}
    assert Block("Intro.\n\nMore.", section="A") in chunks
    assert all(len(chunk.text) <= 100 for chunk in chunks)
