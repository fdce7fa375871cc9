"""The app's life cycle: how it starts and stops."""

from __future__ import annotations

import threading
from pathlib import Path

from litestar.testing import TestClient

from service.app import create_app
from tests.support import make_settings


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
