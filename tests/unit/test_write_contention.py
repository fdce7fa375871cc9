"""Which LanceDB write errors are another writer winning (retried) rather than a fault of the write."""

from __future__ import annotations

import pytest

from service.store.writes import is_write_contention


@pytest.mark.parametrize(
    "message",
    [
        "Commit conflict for version 8: Failed to commit the transaction after 5 retries.",
        "Retryable commit conflict for version 12: This MergeInsert transaction was preempted by concurrent "
        "transaction Rewrite at version 12. Please retry.",
        "Too much write contention: operation failed after 20 attempts",
    ],
)
def test_commit_conflicts_in_every_wording_are_contention(message: str) -> None:
    assert is_write_contention(RuntimeError(message))
    assert is_write_contention(OSError(message))


@pytest.mark.parametrize("message", ["Schema error: field vector has width 256", "Not found: /data/chunks.lance"])
def test_other_failures_are_not(message: str) -> None:
    assert not is_write_contention(RuntimeError(message))
