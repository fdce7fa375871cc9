"""The offline embedder gives every process the same vectors, so replicas and restarts agree."""

from __future__ import annotations

import subprocess
import sys

from service.providers.offline import HashingEmbedder

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
