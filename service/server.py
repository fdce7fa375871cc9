"""One server process: its telemetry and logging, its app, uvicorn. ``ragwatch serve`` and every ``--workers``
worker start the same way, through :func:`process_app`."""

from __future__ import annotations

import gc
import os

import uvicorn
from litestar import Litestar

from service.app import create_app
from service.config import Settings, load_settings
from service.container import telemetry_options
from telemetry import setup_telemetry
from telemetry.http import serve_metrics
from telemetry.logs import configure_logging

__all__ = ["app_from_environment", "freeze_startup_heap", "process_app", "serve"]


def process_app(settings: Settings) -> Litestar:
    """The app as the one app of a server process: telemetry and logging set up for the process, the heap frozen
    once started, telemetry flushed at exit. A settings file that cannot be used raises
    :class:`~service.config.SettingsError` (the telemetry set up for it is shut down first)."""
    telemetry = setup_telemetry(telemetry_options(settings))
    logs = settings.telemetry
    configure_logging(telemetry, logs.log_level, logs.log_format, logs.access_log)
    try:
        app = create_app(settings, telemetry=telemetry)
    except BaseException:
        telemetry.shutdown()
        raise
    app.on_startup.append(freeze_startup_heap)
    app.on_shutdown.append(telemetry.shutdown)
    return app


def app_from_environment() -> Litestar:
    """The app each uvicorn worker builds when ``ragwatch serve --workers N`` runs several (metrics off)."""
    return process_app(load_settings(os.environ))


def freeze_startup_heap() -> None:
    """Keep the objects that live as long as the process out of every cyclic garbage collection.

    Once the app has started, its routes, OpenTelemetry providers, LanceDB tables and clients are a graph of some
    250,000 objects that each older-generation collection would walk again; measured on cached chat with telemetry
    on, that walk cost about 100 µs per request. Frozen objects are still freed by reference counting, so only
    what the process keeps anyway is exempt. A library caller's process (tests) is left as it is.
    """
    gc.collect()
    gc.freeze()


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Run the API until SIGTERM/SIGINT. uvicorn re-raises them after its graceful shutdown, so nothing after
    this call runs; what telemetry still queues is flushed by the app's shutdown hook."""
    # log_config=None: uvicorn's own records go through ragwatch's handlers; the access log is ragwatch's.
    if workers != 1:
        uvicorn.run(
            "service.server:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            access_log=False,
        )
        return
    app = process_app(settings)
    metrics_port = settings.telemetry.metrics_port
    if settings.telemetry.metrics_enabled and metrics_port not in (None, port):
        serve_metrics(app.state.telemetry, host, metrics_port)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
