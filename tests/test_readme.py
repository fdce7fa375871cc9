"""The README is the user's manual: its settings table must match the settings the service reads."""

from __future__ import annotations

import re
from pathlib import Path

from service.config import setting_variables

README = Path(__file__).resolve().parents[1] / "README.md"


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
