"""The README's "Python client" section runs as written: each of its Python examples is executed against the
live server, as a user would paste it, and prints what the README says it does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from ragwatch_client import Client

from tests.support import HANDBOOK, LiveServer, fresh_tenant, token

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = README.read_text().split("\n### Python client\n", 1)[1].split("\n## ", 1)[0]
EXAMPLES = re.findall(r"^```python\n(.*?)^```$", SECTION, flags=re.MULTILINE | re.DOTALL)
PRINTED = [
    ("first steps", ["twenty-five days", "[1] Vacation policy: Every employee"]),
    ("upload a folder", ["vacation.md DocumentCreated(document_id='vacation-", "parking.txt DocumentCreated("]),
    ("stream", ["twenty-five days", "citation(s), trace "]),
    ("conversations", ["['How many vacation days do I get?']"]),
    ("async", ["handbook", "twenty-five days"]),
    ("errors", ["404 not-found No knowledge base 'kb_missing'"]),
    ("retries", ["True"]),
]
"""What each example, in order, prints (among the rest)."""


CASES = [pytest.param(example, printed, id=name) for example, (name, printed) in zip(EXAMPLES, PRINTED, strict=False)]


@pytest.fixture
def namespace(server: LiveServer, tmp_path: Path) -> Iterator[dict[str, str]]:
    """What the examples take as given: the server's address, a token (of a tenant of its own), a knowledge base
    holding the handbook, and a folder of two files (as ``handbook/``)."""
    bearer = token(fresh_tenant(), "alice", ("admin", "member"))
    folder = tmp_path / "handbook"
    folder.mkdir()
    (folder / "vacation.md").write_text("# Vacation\n\nEvery employee gets twenty-five days of paid vacation.\n")
    (folder / "parking.txt").write_text("Visitors park in the north garage.\n")
    with Client(server.url, token=bearer) as client:
        kb = client.knowledge_bases.create("handbook")
        client.documents.create(kb.id, "Handbook", HANDBOOK)
        yield {"url": server.url, "token": bearer, "kb_id": kb.id, "folder": f"{folder}/"}


def test_the_readme_has_the_examples_this_test_expects() -> None:
    assert len(EXAMPLES) == len(PRINTED)


@pytest.mark.parametrize(("example", "printed"), CASES)
def test_the_readme_example_runs_as_written(
    example: str, printed: list[str], namespace: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = example.replace("http://127.0.0.1:8000", namespace["url"]).replace('"handbook/"', repr(namespace["folder"]))

    exec(code, {"token": namespace["token"], "kb_id": namespace["kb_id"]})  # noqa: S102 - the README's own example

    output = capsys.readouterr().out
    for expected in printed:
        assert expected in output, output
