"""What the region knows of the handlers its agents run: their declarations
(version, default timeout, payload schema), and the payload check at submit.

A payload is checked against `tasks.<capability>.payload_schema` of the active
configuration, else against the schema the capability's handler declared (the
agent that registered last with it), with the `jsonschema` library. A payload
that breaks it is refused (400, naming the path) before anything is stored."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

from django.utils import timezone
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from regions.models import HandlerDeclaration

# A declaration a web process read is trusted this long: a schema an agent
# declares takes effect within this time (one indexed read per capability per
# DECLARED_MAX_AGE per process, not one per submission).
DECLARED_MAX_AGE = 2.0
SCHEMA_MAX_BYTES = 64 * 1024


class PayloadInvalid(Exception):
    """The payload breaks its capability's schema; the message names the path."""


@dataclass(frozen=True)
class Declared:
    version: str = ""
    timeout: int | None = None
    payload_schema: dict | None = None


NONE = Declared()
_declared: dict[str, tuple[float, Declared]] = {}
_validators: dict[str, Draft202012Validator] = {}
_MAX_CACHED = 10_000


def schema_problem(schema) -> str | None:
    """Why `schema` cannot serve as a payload schema, or None."""
    if not isinstance(schema, dict):
        return "must be a JSON Schema object"
    if len(json.dumps(schema, separators=(",", ":"))) > SCHEMA_MAX_BYTES:
        return f"is larger than {SCHEMA_MAX_BYTES} bytes"
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return f"is not a valid JSON Schema{f' at {where}' if where else ''}: {exc.message}"
    return None


def handlers_declare(*, agent_id: str, declarations: dict[str, dict]) -> None:
    """Keep what a registering agent's handlers declare (the newest wins)."""
    now = timezone.now()
    for capability, spec in declarations.items():
        HandlerDeclaration.objects.update_or_create(capability=capability, defaults={
            "version": spec.get("version", ""), "timeout": spec.get("timeout"),
            "payload_schema": spec.get("payload_schema"), "agent_id": agent_id, "declared_at": now})
        _declared.pop(capability, None)


def handler_declared(capability: str) -> Declared:
    hit = _declared.get(capability)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    row = (HandlerDeclaration.objects.filter(capability=capability)
           .values_list("version", "timeout", "payload_schema").first())
    declared = Declared(*row) if row else NONE
    if len(_declared) >= _MAX_CACHED:
        _declared.clear()
    _declared[capability] = (time.monotonic() + DECLARED_MAX_AGE, declared)
    return declared


def payload_check(*, capability: str, payload, definition: dict) -> Declared:
    """Raise PayloadInvalid if the payload breaks its schema (the configuration's
    `definition["payload_schema"]`, else the handler's); returns the handler's
    declaration (its default timeout is the submission's next fallback)."""
    declared = handler_declared(capability)
    schema = definition.get("payload_schema") or declared.payload_schema
    if schema:
        error = next(iter(sorted(_validator(schema).iter_errors(payload), key=lambda e: list(e.absolute_path))),
                     None)
        if error is not None:
            raise PayloadInvalid(f"{_path(error.absolute_path)}: {error.message[:300]} "
                                 f"(payload schema of capability {capability})")
    return declared


def _validator(schema: dict) -> Draft202012Validator:
    digest = hashlib.sha256(json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    validator = _validators.get(digest)
    if validator is None:
        if len(_validators) >= _MAX_CACHED:
            _validators.clear()
        validator = _validators[digest] = Draft202012Validator(schema)
    return validator


def _path(parts) -> str:
    out = "payload"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out
