"""The app's life cycle: how it starts and stops, as a server process runs it (``process_app``) and as a library
caller does (``create_app``)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from service.app import create_app
from service.server import process_app
from tests.support import make_settings
from tests.telemetry import logging_restored


@pytest.fixture
def unfrozen_heap() -> Iterator[None]:
    """Start and leave the test process with nothing in the permanent generation."""
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen_heap")
def test_a_server_process_freezes_what_it_holds_once_started(tmp_path: Path) -> None:
    with logging_restored(), TestClient(process_app(make_settings(tmp_path))) as client:
        frozen = gc.get_freeze_count()
        assert client.get("/health/live").status_code == 200

    assert frozen > 10_000


@pytest.mark.usefixtures("unfrozen_heap")
def test_a_library_caller_keeps_its_garbage_collector_as_it_was(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        assert client.get("/health/live").status_code == 200
        assert gc.get_freeze_count() == 0


def test_an_app_stopped_as_it_starts_still_stops(tmp_path: Path) -> None:
    """Shutdown cancels the readiness monitor while its first checks run; that must end it every time."""
    settings = make_settings(tmp_path)

    def start_and_stop() -> None:
        with TestClient(create_app(settings)) as client:
            client.get("/health/live")

    for _ in range(20):
        cycle = threading.Thread(target=start_and_stop, daemon=True)
        cycle.start()
        cycle.join(timeout=15)
        assert not cycle.is_alive(), "the app's shutdown did not finish"
