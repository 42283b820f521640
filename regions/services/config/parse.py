"""The configuration repository's files: parsed (YAML without aliases, bounded),
validated against the schema and each other, merged region over global, and
compared with the active configuration key by key."""
from __future__ import annotations

import copy

import yaml
from django.conf import settings
from jsonschema import Draft202012Validator

from project.jsonsafe import json_problem
from regions.config_schema import SCHEMA
from regions.services.handlers import schema_problem
from regions.services.callbacks.guard import allowed_host_problem
from regions.services.schedules.due import schedule_problem

CONFIG_FILE_MAX_BYTES = 1024 * 1024


class ConfigError(Exception):
    """The commit cannot be used; the message names the file, key and reason."""


def _validate_file(path: str, data) -> None:
    errors = sorted(Draft202012Validator(SCHEMA).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        key = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ConfigError(f"{path}: {key}: {e.message}")


class _PlainLoader(yaml.SafeLoader):
    """YAML without aliases: `*ref` can make a small file expand without bound
    when it is copied, validated or stored (the "billion laughs")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed",
                                              event.start_mark)
        return super().compose_node(parent, index)


def _yaml_load(path: str, text: str):
    if len(text.encode("utf-8", errors="replace")) > CONFIG_FILE_MAX_BYTES:
        raise ConfigError(f"{path}: larger than {CONFIG_FILE_MAX_BYTES} bytes")
    try:
        data = yaml.load(text, Loader=_PlainLoader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    problem = json_problem(data, max_depth=16)
    if problem:
        # Dates, binary, non-string keys, NUL...: nothing the schema allows is any of these.
        raise ConfigError(f"{path}: {problem}")
    return data


def config_parse(files: dict[str, str]) -> dict:
    """Parse and validate each file, then overlay region on global key by key."""
    merged: dict = {}
    parsed: dict[str, dict] = {}
    for path, text in files.items():
        data = _yaml_load(path, text)
        _validate_file(path, data)
        parsed[path] = data
        merged = deep_merge(merged, data)
    for capability, definition in sorted(merged.get("tasks", {}).items()):
        problem = "payload_schema" in definition and schema_problem(definition["payload_schema"])
        if problem:
            raise ConfigError(f"tasks.{capability}.payload_schema {problem}")
    for name, definition in sorted(merged.get("schedules", {}).items()):
        problem = schedule_problem(definition)
        if problem:
            key, reason = problem
            # The file that set the key (or, for the schedule as a whole, the last that names it).
            where = next((path for path, data in reversed(parsed.items())
                          if name in (data.get("schedules") or {})
                          and (not key or key in data["schedules"][name])), "global.yaml")
            raise ConfigError(f"{where}: schedules.{name}{'.' + key if key else ''}: {reason}")
    for entry in merged.get("callbacks", {}).get("allowed_hosts", []):
        problem = allowed_host_problem(entry)
        if problem:
            raise ConfigError(f"callbacks.allowed_hosts: {entry!r}: {problem}")
    ttl = merged.get("agents", {}).get("heartbeat_ttl", settings.HEARTBEAT_TTL)
    interval = merged.get("agents", {}).get("heartbeat_interval", settings.HEARTBEAT_INTERVAL)
    if ttl < 2 * interval:
        where = next((p for p in reversed(list(files)) if "heartbeat" in files[p]), "global.yaml")
        raise ConfigError(f"{where}: agents.heartbeat_ttl: {ttl} is shorter than two heartbeat intervals "
                          f"({2 * interval}); agents would be marked offline between beats")
    return merged


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _flatten(data, prefix: str = "") -> dict:
    if isinstance(data, dict) and data:
        out = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def config_diff(old: dict, new: dict) -> list[dict]:
    a, b = _flatten(old), _flatten(new)
    return [{"key": k, "from": a.get(k), "to": b.get(k)} for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]

