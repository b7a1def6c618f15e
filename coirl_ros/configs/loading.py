"""Loading YAML files into frozen, validated pydantic models with errors a person can act on.

Every config class derives from `ConfigModel`: unknown keys are errors (a typo must not silently
fall back to a default), and instances are immutable so a config cannot drift after start-up.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigModel(BaseModel):
    """Base of every coirl_ros config: frozen, strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


ModelT = TypeVar("ModelT", bound=ConfigModel)


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file, the key and what was expected."""


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _fields_at(model_cls: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the (nested) model that `loc` points into, for 'unknown key' hints."""
    cls: Any = model_cls
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        # Unwrap list[Model] / tuple[Model, ...] / Model | None to reach the nested model.
        for arg in (ann, *getattr(ann, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                cls = arg
                break
    return sorted(getattr(cls, "model_fields", {}))


def format_validation_error(source: str, model_cls: type[BaseModel], err: ValidationError) -> str:
    """One line per problem: `file: key 'a.b[2].c': what was expected (got value)`."""
    lines = [f"{source}: invalid {model_cls.__name__} ({err.error_count()} problem(s))"]
    for e in err.errors():
        key = _key_path(e["loc"])
        if e["type"] == "extra_forbidden":
            known = ", ".join(_fields_at(model_cls, e["loc"]))
            lines.append(f"  {source}: key '{key}': unknown key; expected one of: {known}")
        elif e["type"] == "missing":
            lines.append(f"  {source}: key '{key}': required key is missing")
        else:
            got = e.get("input")
            got_text = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {source}: key '{key}': {e['msg']}{got_text}")
    return "\n".join(lines)


def config_from_dict[ModelT: ConfigModel](
    model_cls: type[ModelT], data: Any, source: str = "<dict>"
) -> ModelT:
    """Validate a plain dict (e.g. parsed YAML or ROS parameters) into `model_cls`."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of keys for {model_cls.__name__}, got {type(data).__name__}"
        )
    try:
        return model_cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, model_cls, err)) from None


def load_config[ModelT: ConfigModel](path: str | Path, model_cls: type[ModelT]) -> ModelT:
    """Read a YAML file into `model_cls`; any problem raises `ConfigError` naming file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (expected a YAML file for {model_cls.__name__})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    return config_from_dict(model_cls, data, source=str(path))


def config_hash(config: BaseModel) -> str:
    """Short, stable content hash of a config (recorded with every episode and weight snapshot)."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
