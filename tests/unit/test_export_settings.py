"""Exports that do not stall requests (telemetry/setup.py): small batches, and the GIL handed back within 0.5 ms
while anything is exported over OTLP."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from telemetry import TelemetryOptions, setup_telemetry
from telemetry.setup import EXPORT_BATCH_SIZE, _batch_size

OTLP = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}


@pytest.fixture
def default_switch_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(before)


def _switch_interval_after_setup(environ: dict[str, str]) -> float:
    telemetry = setup_telemetry(TelemetryOptions(service_version="test", shutdown_timeout_s=0.1), environ)
    try:
        return sys.getswitchinterval()
    finally:
        telemetry.shutdown()


@pytest.mark.usefixtures("default_switch_interval")
def test_exporting_over_otlp_hands_the_gil_over_every_half_millisecond() -> None:
    assert _switch_interval_after_setup(OTLP) == pytest.approx(0.0005)


@pytest.mark.usefixtures("default_switch_interval")
def test_with_nothing_exported_the_switch_interval_is_left_alone() -> None:
    assert _switch_interval_after_setup({}) == pytest.approx(0.005)


def test_a_switch_interval_the_process_chose_is_kept() -> None:
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.002)
    try:
        assert _switch_interval_after_setup(OTLP) == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)


def test_spans_and_log_records_leave_in_batches_of_64_unless_the_environment_says_otherwise() -> None:
    assert EXPORT_BATCH_SIZE == 64
    assert _batch_size({}, "BSP") == _batch_size({}, "BLRP") == EXPORT_BATCH_SIZE
    assert _batch_size({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512"}, "BSP") is None  # the SDK reads it itself
