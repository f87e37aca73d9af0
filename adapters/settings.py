"""Reading the config: file (TOML or YAML) < ``LEARND_*`` environment < CLI ``--set`` flags.

Each layer becomes a nested dict; the layers are deep-merged and validated once into the frozen
:class:`learnd.daemon.config.LearndConfig`, so an unknown key from *any* layer stops start-up.

Environment: ``LEARND_<SECTION>__<FIELD>`` (``__`` separates levels), e.g.
``LEARND_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or ``LEARND_LEARNING__DRIFT__DETECTOR=kswin``.
CLI: ``--set kafka.bootstrap_servers=broker:9092``. Values that start with ``[`` or ``{`` are
parsed as JSON (``--set model.hidden=[128,64]``); everything else is coerced by the model.
An empty value (or ``null``) sets a key to null, except a secret (``serving.token``,
``metrics.token``, ``kafka.sasl_password``): that is taken as given, so an empty or blank one
is refused like an empty one in a file; to leave a secret unset, leave its variable unset.

Why not pydantic-settings' own sources: they skip the env prefix for aliased fields (the
``schema`` section is one) and silently ignore unknown ``LEARND_*`` variables; a typo in a
deployment's environment must stop start-up like a typo in the file does.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from learnd.daemon.config import FeatureSpec, LearndConfig, ServingConfig, secret_fields

ENV_PREFIX = "LEARND_"
# LEARND_* variables that are not config keys: the config file, the set-up scripts, the tests.
NOT_CONFIG = {
    "LEARND_CONFIG",
    "LEARND_TANSU_BIN",
    "LEARND_TORCH_SPEC",
    "LEARND_TORCH_INDEX_URL",
    "LEARND_EXTRAS",
    "LEARND_EDITABLE",
}
NOT_CONFIG_PREFIXES = ("LEARND_TEST_",)


class ConfigError(ValueError):
    """A config that cannot start the daemon; the message names the field and valid values."""


SECRETS = frozenset(secret_fields())


def _parse_value(raw: str, path: Sequence[str] = ()) -> Any:
    """A value from the environment or a flag. A secret is taken as it is (surrounding blanks
    aside): an empty one is refused by the config, never read as unset."""
    s = raw.strip()
    if ".".join(path) in SECRETS:
        return s
    if s[:1] in "[{":
        try:
            return json.loads(s)
        except json.JSONDecodeError as e:
            raise ConfigError(f"value {raw!r} looks like JSON but is not valid: {e}") from e
    if s.lower() in ("null", "none", ""):
        return None
    return s


def _put(tree: dict, path: Sequence[str], value: Any, origin: str) -> None:
    node = tree
    for part in path[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{origin}: {'.'.join(path)} conflicts with a value set for {part}")
        node = nxt
    node[path[-1]] = value


def _merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def read_file(path: str | os.PathLike) -> dict:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror}") from e
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {p} must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"config file {p} is not valid: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a table/mapping at the top level")
    return data


def from_env(environ: Mapping[str, str]) -> dict:
    tree: dict = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in NOT_CONFIG:
            continue
        if name.startswith(NOT_CONFIG_PREFIXES):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if len(path) == 1:
            raise ConfigError(
                f"environment {name}: not a config key; sections and keys are separated by a "
                f"double underscore, e.g. LEARND_KAFKA__TOPIC"
            )
        _put(tree, path, _parse_value(raw, path), f"environment {name}")
    return tree


def from_flags(assignments: Sequence[str]) -> dict:
    tree: dict = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes section.field=value, got {item!r}")
        path = key.strip().split(".")
        _put(tree, path, _parse_value(raw, path), f"--set {key}")
    return tree


def _valid_keys(loc: Sequence[Any]) -> list[str]:
    """The keys that the section holding ``loc`` accepts."""
    if tuple(loc[:3]) == ("schema", "features", "table") and len(loc) == 5:
        return sorted(FeatureSpec.model_fields)  # one typed feature of [schema.features]
    model: Any = LearndConfig
    for part in loc[:-1]:
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        field = fields.get(str(part))
        if field is None or not hasattr(field.annotation, "model_fields"):
            return []
        model = field.annotation
    return sorted(f.alias or n for n, f in model.model_fields.items())


def _describe(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key; valid keys here: {', '.join(_valid_keys(err['loc']))}"
    if err["type"] == "missing":
        return f"{loc}: required"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, dict) or loc in SECRETS else f" (got {got!r})"
    return f"{loc}: {msg}{shown}" if loc else msg


def _layers(
    file: str | os.PathLike | None,
    environ: Mapping[str, str] | None,
    overrides: Sequence[str],
    defaults: Mapping | None,
) -> dict:
    """defaults < file < environment < flags, deep-merged."""
    environ = os.environ if environ is None else environ
    file = file or environ.get("LEARND_CONFIG")
    layers = [dict(defaults or {})]
    if file:
        layers.append(read_file(file))
    layers += [from_env(environ), from_flags(overrides)]
    merged: dict = {}
    for layer in layers:
        merged = _merge(merged, layer)
    return merged


def _invalid(e: ValidationError, prefix: tuple[str, ...] = ()) -> ConfigError:
    lines = [_describe({**err, "loc": (*prefix, *err["loc"])}) for err in e.errors()]
    return ConfigError("invalid config:\n  " + "\n  ".join(lines))


def build_config(
    file: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
    defaults: Mapping | None = None,
) -> LearndConfig:
    """Merge defaults < file < environment < flags, and validate once."""
    merged = _layers(file, environ, overrides, defaults)
    try:
        return LearndConfig.model_validate(merged)
    except ValidationError as e:
        error = _invalid(e)
        no_file = not (file or (os.environ if environ is None else environ).get("LEARND_CONFIG"))
        if no_file and not defaults:
            error = ConfigError(
                f"{error}\n(no config file was given: --config FILE or LEARND_CONFIG)"
            )
        raise error from None


def serving_config(
    file: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
) -> ServingConfig:
    """The ``serving`` section alone, from the same layers as :func:`build_config`: where the
    client commands (``learnd predict``, ``health``, ...) find the daemon and its token. The
    other sections are not validated, so a client needs no ``schema``."""
    section = _layers(file, environ, overrides, None).get("serving", {})
    if not isinstance(section, dict):
        raise ConfigError("invalid config:\n  serving: must be a table/mapping")
    try:
        return ServingConfig.model_validate(section)
    except ValidationError as e:
        raise _invalid(e, ("serving",)) from None
