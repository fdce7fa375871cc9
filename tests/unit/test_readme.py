"""The README is the user's manual: its settings table must match the settings the service reads, and its
error table every problem the service answers with."""

from __future__ import annotations

import re
from pathlib import Path

from service.config import setting_variables
from tests.unit.test_problems import every_error_kind

README = Path(__file__).resolve().parents[2] / "README.md"


def _settings_in_code() -> dict[str, object]:
    return {name: field.default for name, field in setting_variables()}


def _settings_table() -> dict[str, str]:
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]+) \|", README.read_text(), flags=re.MULTILINE)
    return {name: default.strip() for name, default in rows}


def test_every_setting_the_service_reads_is_in_the_readme_table_and_nothing_else() -> None:
    assert set(_settings_table()) == set(_settings_in_code())


def test_the_readme_states_each_settings_default() -> None:
    table = _settings_table()
    for name, default in _settings_in_code().items():
        if default is None:
            assert table[name] == "—", name
        elif isinstance(default, bool):
            assert table[name] == f"`{str(default).lower()}`", name
        elif isinstance(default, tuple):
            assert table[name] == f"`{','.join(default)}`", name
        elif isinstance(default, float) and default.is_integer():
            assert table[name] in {f"`{default}`", f"`{int(default)}`"}, name
        else:
            assert table[name] == f"`{default}`", name


def test_the_readme_opens_with_the_two_commands() -> None:
    head = README.read_text()[:600]
    assert re.search(r"^make run\b", head, flags=re.MULTILINE)
    assert re.search(r"^make test\b", head, flags=re.MULTILINE)


def _error_table() -> set[tuple[int, str]]:
    section = README.read_text().split("**Errors**", 1)[1].split("\n\n## ", 1)[0]
    rows = re.findall(r"^\| (\d{3}) \| ([^|]+) \|", section, flags=re.MULTILINE)
    return {(int(status), slug) for status, slugs in rows for slug in re.findall(r"`([a-z-]+)`", slugs)}


def test_the_readme_error_table_lists_every_problem_the_service_answers_with() -> None:
    table = _error_table()
    for kind in every_error_kind():
        assert (kind.status, kind.slug) in table, f"{kind.status} {kind.slug} is missing from the README"
