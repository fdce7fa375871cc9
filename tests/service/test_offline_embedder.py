"""The offline embedders: WordLlama (the default) loads with no network and finds meaning; the hashing one
gives every process the same vectors, so replicas and restarts agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from service.providers.offline import HashingEmbedder
from service.providers.wordllama import WordLlamaEmbedder
from tests.support import auth, create_kb, ingest, live_server, make_settings

VACATION = "Every employee gets twenty-five days of paid vacation per year."


def test_hashing_embedder_is_the_same_in_another_process() -> None:
    """Python's ``hash`` is salted per process; the embedder must not depend on it."""
    script = (
        "from service.providers.offline import HashingEmbedder;"
        f"print(HashingEmbedder(64).embed_sync([{VACATION!r}]).tobytes().hex())"
    )
    command = [sys.executable, "-c", script]  # this interpreter, and a script written above
    other = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)

    assert bytes.fromhex(other.stdout.strip()) == HashingEmbedder(64).embed_sync([VACATION]).tobytes()


# --- WordLlama, the default ----------------------------------------------------------------------------------


def test_the_default_embedder_is_wordllama_loaded_from_its_wheel_with_the_network_unreachable() -> None:
    """Every socket refused and the Hugging Face hub told nothing: the model still loads and embeds."""
    script = (
        "import socket\n"
        "def refuse(*args, **kwargs): raise OSError('no network in this test')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
        "from service.config import load_settings\n"
        "from service.providers import build_providers\n"
        "embedder = build_providers(load_settings({'RAGWATCH_JWT_SECRET': 'x' * 32})).embedder\n"
        "vectors = embedder.embed_sync(['paid vacation days', 'holiday entitlement', 'compile the kernel'])\n"
        "print(embedder.model, embedder.dimensions, vectors.shape[1], vectors[0] @ vectors[1], vectors[0] @ vectors[2])"
    )
    command = [sys.executable, "-c", script]  # this interpreter, and a script written above
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)

    assert done.returncode == 0, done.stderr
    model, width, columns, related, unrelated = done.stdout.split()
    assert (model, width, columns) == ("wordllama-l2-supercat-256", "256", "256")
    assert float(related) > float(unrelated) + 0.2


def test_wordllama_finds_a_passage_that_shares_no_word_with_the_question(tmp_path: Path) -> None:
    """Semantic retrieval with the default settings: "holiday" and "staff" find "vacation" and "employee"."""
    with (
        live_server(make_settings(tmp_path, RAGWATCH_EMBEDDER="wordllama")) as server,
        server.client(auth()) as client,
    ):
        kb_id = create_kb(client, "policies")
        ingest(client, kb_id, title="Leave", text=VACATION)
        ingest(client, kb_id, title="Build", text="Compile the firmware with the cross toolchain before flashing.")
        found = client.post(f"/v1/knowledge-bases/{kb_id}/search", json={"query": "holiday allowance for staff"})

    assert found.status_code == 200, found.text
    assert found.json()["results"][0]["text"] == VACATION


def test_wordllama_can_be_narrower_and_names_its_width() -> None:
    narrow = WordLlamaEmbedder(128)

    vectors = narrow.embed_sync(["paid vacation days", ""])

    assert narrow.model == "wordllama-l2-supercat-128"
    assert vectors.shape == (2, 128)
    assert np.isclose(np.linalg.norm(vectors[0]), 1.0)
    assert not vectors[1].any()  # blank text embeds to zero, as with every embedder
