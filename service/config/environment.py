"""Reading the settings from the environment: one conversion per variable, one line per mistake.

A field typed :class:`Secret` may instead be given as ``<NAME>_FILE``, a path to a file holding it, as Docker
and Kubernetes mount secrets. Any invalid value stops start-up with a :class:`SettingsError` whose message is
one line naming the variable and what it expected; a secret is never part of it.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from service.config.checks import check_consistency
from service.config.sections import Secret, Settings, SettingsError

__all__ = ["load_settings", "setting_variables"]

_SectionT = TypeVar("_SectionT", bound=msgspec.Struct)


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build and validate the settings from ``environ`` (usually ``os.environ``)."""
    sections = {info.name: _load_section(info.type, environ) for info in msgspec.structs.fields(Settings)}
    settings = Settings(**sections)
    check_consistency(settings)
    return settings


def setting_variables() -> Iterator[tuple[str, msgspec.structs.FieldInfo]]:
    """Every environment variable the settings read, with the field it sets."""
    for section in msgspec.structs.fields(Settings):
        for info in msgspec.structs.fields(section.type):
            yield info.encode_name, info


def _load_section(cls: type[_SectionT], environ: Mapping[str, str]) -> _SectionT:
    values: dict[str, Any] = {}
    for info in msgspec.structs.fields(cls):
        name = info.encode_name
        if _is_secret(info.type):
            secret = _read_secret(name, environ)
            if secret is not None:
                values[info.name] = secret
            continue
        raw = environ.get(name)
        if raw is None or raw.strip() == "":
            continue
        values[info.name] = _convert(name, raw.strip(), info.type)
    return cls(**values)


def _convert(name: str, raw: str, annotation: Any) -> Any:
    value: Any = raw
    if typing.get_origin(annotation) is tuple:
        value = [item.strip() for item in raw.split(",") if item.strip()]
    try:
        converted = msgspec.convert(value, annotation, strict=False)
    except msgspec.ValidationError:
        raise SettingsError(f"{name}: expected {_expectation(annotation)}, got {raw!r}") from None
    if isinstance(converted, float) and not math.isfinite(converted):
        raise SettingsError(f"{name}: expected {_expectation(annotation)}, got {raw!r}")
    return converted


def _expectation(annotation: Any) -> str:
    """What a value of ``annotation`` looks like, in words: "an integer >= 1", "one of jwt, dev"."""
    metas: list[msgspec.Meta] = []
    if typing.get_origin(annotation) is Annotated:
        annotation, *extras = typing.get_args(annotation)
        metas = [extra for extra in extras if isinstance(extra, msgspec.Meta)]
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return " or ".join(_expectation(arg) for arg in args)
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(arg) for arg in args)
    if typing.get_origin(annotation) is tuple:
        return "a comma-separated list"
    noun = {int: "an integer", float: "a number"}.get(annotation, "a value")
    bounds = [
        f"{symbol} {getattr(meta, attribute):g}"
        for meta in metas
        for attribute, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if getattr(meta, attribute) is not None
    ]
    return f"{noun} {' and '.join(bounds)}" if bounds else noun


def _is_secret(annotation: Any) -> bool:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return Secret in typing.get_args(annotation)
    return annotation is Secret


def _read_secret(name: str, environ: Mapping[str, str]) -> Secret | None:
    """The secret in ``name`` or in the file ``<name>_FILE`` names. Messages never hold the secret itself."""
    direct = environ.get(name)
    path = environ.get(f"{name}_FILE")
    if direct and path:
        raise SettingsError(f"{name}: set either {name} or {name}_FILE, not both")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{name}_FILE: cannot read {path!r} ({exc.strerror or type(exc).__name__})") from None
        except UnicodeDecodeError:
            raise SettingsError(f"{name}_FILE: expected a UTF-8 text file, {path!r} is not") from None
        if not value:
            raise SettingsError(f"{name}_FILE: expected the secret in {path!r}, the file is empty")
        return Secret(value)
    return Secret(direct) if direct else None
