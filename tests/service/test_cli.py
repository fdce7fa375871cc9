"""``ragwatch`` from the shell: mint a token, ingest a folder, ask a question (whole or streamed).

Each test runs the real command in a subprocess (``python -m service``) against a live server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from ragwatch_client import Client

from tests.documents import docx_bytes, image_pdf, text_pdf
from tests.support import JWT_SECRET, LiveServer, free_port, run_ragwatch, token

HANDBOOK = (
    "# Vacation policy\n\nEvery employee gets twenty-five days of paid vacation per year. "
    "Unused vacation days expire at the end of March of the following year.\n"
)
EXPENSES = "Travel expenses are reimbursed within fourteen days when receipts are attached.\n"
PARKING = "Visitors park in the north garage, level two; employees park in the south garage.\n"
INDEX = "This folder holds the company handbook: vacation, expenses and parking.\n"


def decode(minted: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(minted, JWT_SECRET, algorithms=["HS256"])
    return claims


# --- token ----------------------------------------------------------------------------------------------


def test_token_prints_only_a_token_that_decodes_to_the_requested_caller(tmp_path: Path) -> None:
    before = int(time.time())

    result = run_ragwatch(
        "token", "--tenant", "acme", "--user", "alice", "--role", "admin", "--ttl", "1h",
        cwd=tmp_path, RAGWATCH_JWT_SECRET=JWT_SECRET,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.endswith("\n")
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    claims = decode(lines[0])
    assert claims["sub"] == "alice"
    assert claims["tenant_id"] == "acme"
    assert claims["roles"] == ["admin"]
    assert before + 3600 <= claims["exp"] <= int(time.time()) + 3600


@pytest.mark.parametrize(("ttl", "seconds"), [("90s", 90), ("15m", 900), ("7d", 604_800), ("120", 120)])
def test_token_ttl_accepts_seconds_minutes_hours_and_days(tmp_path: Path, ttl: str, seconds: int) -> None:
    result = run_ragwatch(
        "token", "--tenant", "acme", "--user", "u1", f"--ttl={ttl}", cwd=tmp_path, RAGWATCH_JWT_SECRET=JWT_SECRET
    )

    assert result.returncode == 0, result.stderr
    claims = decode(result.stdout.strip())
    assert claims["exp"] - claims["iat"] == seconds


def test_token_roles_default_to_member_and_repeat(tmp_path: Path) -> None:
    default = run_ragwatch("token", "--tenant", "acme", "--user", "u1", cwd=tmp_path, RAGWATCH_JWT_SECRET=JWT_SECRET)
    both = run_ragwatch(
        "token", "--tenant", "acme", "--user", "u1", "--role", "admin", "--role", "member",
        cwd=tmp_path, RAGWATCH_JWT_SECRET=JWT_SECRET,
    )  # fmt: skip

    assert decode(default.stdout.strip())["roles"] == ["member"]
    assert decode(both.stdout.strip())["roles"] == ["admin", "member"]


def test_token_carries_the_configured_issuer_and_audience(tmp_path: Path) -> None:
    result = run_ragwatch(
        "token", "--tenant", "acme", "--user", "u1",
        cwd=tmp_path, RAGWATCH_JWT_SECRET=JWT_SECRET, RAGWATCH_JWT_ISSUER="https://iss", RAGWATCH_JWT_AUDIENCE="api",
    )  # fmt: skip

    claims = jwt.decode(result.stdout.strip(), JWT_SECRET, algorithms=["HS256"], audience="api", issuer="https://iss")
    assert claims["sub"] == "u1"


@pytest.mark.parametrize("ttl", ["soon", "0", "-1h", "1.5h", "1w", ""])
def test_token_with_a_bad_ttl_is_a_usage_error(tmp_path: Path, ttl: str) -> None:
    result = run_ragwatch(
        "token", "--tenant", "acme", "--user", "u1", f"--ttl={ttl}", cwd=tmp_path, RAGWATCH_JWT_SECRET=JWT_SECRET
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert "usage: ragwatch token" in result.stderr
    assert "argument --ttl: expected a duration such as 90s, 15m, 1h or 7d" in result.stderr


def test_token_with_an_invalid_tenant_id_is_refused_in_one_line(tmp_path: Path) -> None:
    result = run_ragwatch(
        "token", "--tenant", "acme' OR 1=1", "--user", "u1", cwd=tmp_path, RAGWATCH_JWT_SECRET=JWT_SECRET
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("ragwatch: invalid tenant id")


def test_token_without_a_secret_names_the_missing_variable(tmp_path: Path) -> None:
    result = run_ragwatch("token", "--tenant", "acme", "--user", "u1", cwd=tmp_path)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("ragwatch: RAGWATCH_JWT_SECRET: required")
    assert result.stderr.count("\n") == 1


def test_token_refuses_to_mint_an_hs256_token_the_server_would_not_accept(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    key_file = tmp_path / "rsa.pem"
    key_file.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    result = run_ragwatch(
        "token", "--tenant", "acme", "--user", "u1",
        cwd=tmp_path, RAGWATCH_JWT_SECRET=JWT_SECRET, RAGWATCH_JWT_ALGORITHMS="RS256",
        RAGWATCH_JWT_PUBLIC_KEY_FILE=str(key_file),
    )  # fmt: skip

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("ragwatch: RAGWATCH_JWT_ALGORITHMS:")


# --- ingest and ask -------------------------------------------------------------------------------------


@pytest.fixture
def handbook_dir(tmp_path: Path) -> Path:
    """Four text files (one nested, one named with a leading underscore), a PDF and a DOCX, and a spreadsheet
    that ``ingest`` leaves out by its name."""
    folder = tmp_path / "handbook"
    (folder / "nested").mkdir(parents=True)
    (folder / "vacation.md").write_text(HANDBOOK)
    (folder / "expenses.txt").write_text(EXPENSES)
    (folder / "nested" / "parking.md").write_text(PARKING)
    (folder / "_index.md").write_text(INDEX)
    (folder / "security.pdf").write_bytes(text_pdf([["Badges open the north door."], ["Visitors sign in."]]))
    (folder / "onboarding.docx").write_bytes(docx_bytes([(1, "First day", ["Collect your laptop at IT."])]))
    (folder / "budget.xlsx").write_bytes(b"PK\x03\x04 a spreadsheet")
    return folder


@pytest.fixture
def api(server: LiveServer) -> Iterator[Client]:
    """The typed client, as tenant ``acme``'s admin: what the tests read the knowledge base's state with."""
    with Client(server.url, token=token()) as client:
        yield client


@pytest.fixture
def empty_kb(api: Client) -> str:
    return api.knowledge_bases.create("cli").id


def kb_state(api: Client, kb: str) -> tuple[int, int, list[str], list[str]]:
    """Document count, chunk count, sorted titles and sorted document ids of ``kb``."""
    detail = api.knowledge_bases.get(kb)
    documents = list(api.documents.list(kb))
    return (
        detail.document_count,
        detail.chunk_count,
        sorted(document.title for document in documents),
        sorted(document.document_id for document in documents),
    )


def test_ingest_a_folder_adds_every_file_of_a_supported_format(
    server: LiveServer, api: Client, empty_kb: str, handbook_dir: Path, tmp_path: Path
) -> None:
    """The client needs only --url and --token: none of the server's settings are in its environment."""
    result = run_ragwatch(
        "ingest", str(handbook_dir), "--kb", empty_kb, "--url", server.url, "--token", token(), cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert "ingested 6 file(s)" in result.stdout
    assert f"into {empty_kb}" in result.stdout
    documents, chunks, titles, _ = kb_state(api, empty_kb)
    assert documents == 6
    assert chunks >= 6
    assert titles == [
        "_index.md", "expenses.txt", "onboarding.docx", "parking.md", "security.pdf", "vacation.md"
    ]  # fmt: skip


def test_ingesting_the_same_folder_again_replaces_instead_of_duplicating(
    server: LiveServer, api: Client, empty_kb: str, handbook_dir: Path, tmp_path: Path
) -> None:
    arguments = ("ingest", str(handbook_dir), "--kb", empty_kb, "--url", server.url, "--token", token())
    first = run_ragwatch(*arguments, cwd=tmp_path)
    after_first = kb_state(api, empty_kb)
    (handbook_dir / "expenses.txt").write_text(EXPENSES + "Meals are reimbursed up to forty euros per day.\n")

    second = run_ragwatch(*arguments, cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert kb_state(api, empty_kb) == after_first
    expenses = next(document for document in api.documents.list(empty_kb) if document.title == "expenses.txt")
    assert "forty euros" in api.documents.get(empty_kb, expenses.document_id).text


def test_ingest_reports_each_refused_file_with_the_servers_reason_and_ingests_the_rest(
    server: LiveServer, api: Client, empty_kb: str, handbook_dir: Path, tmp_path: Path
) -> None:
    (handbook_dir / "scan.pdf").write_bytes(image_pdf())
    result = run_ragwatch(
        "ingest", str(handbook_dir / "budget.xlsx"), str(handbook_dir), "--kb", empty_kb, "--url", server.url,
        "--token", token(), cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 1
    refused = sorted(result.stderr.splitlines())
    assert len(refused) == 2
    assert refused[0].startswith(f"ragwatch: {handbook_dir / 'budget.xlsx'}: 415 ")
    assert refused[1].startswith(f"ragwatch: {handbook_dir / 'scan.pdf'}: 422 ")
    assert "OCR" in refused[1]
    assert "ingested 6 file(s)" in result.stdout
    assert kb_state(api, empty_kb)[0] == 6


def test_ingest_of_a_missing_path_fails_in_one_line(server: LiveServer, empty_kb: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope"

    result = run_ragwatch(
        "ingest", str(missing), "--kb", empty_kb, "--url", server.url, "--token", token(), cwd=tmp_path
    )

    assert result.returncode == 1
    assert result.stderr == f"ragwatch: no such file or folder: {missing}\n"


@pytest.fixture
def ingested_kb(server: LiveServer, empty_kb: str, handbook_dir: Path, tmp_path: Path) -> str:
    result = run_ragwatch(
        "ingest", str(handbook_dir), "--kb", empty_kb, "--url", server.url, "--token", token(), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    return empty_kb


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_ask_prints_an_answer_with_citations(
    server: LiveServer, ingested_kb: str, tmp_path: Path, stream: bool
) -> None:
    member = token(roles=("member",))
    arguments = ["ask", "How many vacation days do employees get?", "--kb", ingested_kb, "--url", server.url]
    arguments += ["--token", member, *(["--stream"] if stream else [])]

    result = run_ragwatch(*arguments, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "twenty-five days" in lines[0]
    assert "[1]" in lines[0]
    assert lines[1].startswith("  [1] vacation.md (")
    assert lines[-1].startswith("  trace ")
    assert member not in result.stdout


def test_ask_without_token_mints_one_from_the_shared_secret(
    server: LiveServer, ingested_kb: str, tmp_path: Path
) -> None:
    result = run_ragwatch(
        "ask", "Where do visitors park?", "--kb", ingested_kb, "--url", server.url, "--tenant", "acme",
        cwd=tmp_path, RAGWATCH_JWT_SECRET=JWT_SECRET,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "north garage" in result.stdout
    assert "parking.md" in result.stdout


def test_ask_about_an_unknown_knowledge_base_fails_with_the_problem_in_one_line(
    server: LiveServer, tmp_path: Path
) -> None:
    result = run_ragwatch(
        "ask", "anything?", "--kb", "kb_missing", "--url", server.url, "--token", token(), cwd=tmp_path
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("ragwatch: 404 ")
    assert result.stderr.count("\n") == 1


def test_ask_with_a_rejected_token_reports_the_401(server: LiveServer, ingested_kb: str, tmp_path: Path) -> None:
    forged = jwt.encode(
        {"sub": "x", "tenant_id": "acme", "roles": ["admin"], "exp": 2**31}, "f" * 40, algorithm="HS256"
    )

    result = run_ragwatch("ask", "hi?", "--kb", ingested_kb, "--url", server.url, "--token", forged, cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.startswith("ragwatch: 401 ")
    assert forged not in result.stderr


def test_reindex_of_a_knowledge_base_on_the_servers_embedder_says_there_is_nothing_to_do(
    server: LiveServer, ingested_kb: str, tmp_path: Path
) -> None:
    result = run_ragwatch("reindex", "--kb", ingested_kb, "--url", server.url, "--token", token(), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "already embedded with hashing-384: nothing to do\n"


def test_a_client_command_against_no_server_fails_in_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = run_ragwatch("ask", "hi?", "--kb", "kb1", "--url", url, "--token", token(), cwd=tmp_path)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"ragwatch: Cannot reach {url}/v1/chat: ")
    assert result.stderr.count("\n") == 1


def test_serve_with_an_invalid_port_exits_with_code_2_and_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = run_ragwatch("serve", cwd=tmp_path, RAGWATCH_PORT="notaport", RAGWATCH_JWT_SECRET=JWT_SECRET)

    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "RAGWATCH_PORT" in lines[0]
    assert "'notaport'" in lines[0]
    assert JWT_SECRET not in result.stderr
