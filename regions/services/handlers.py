"""What the region knows of the handlers its agents run: their declarations
(version, default timeout, payload schema), and the payload check at submit.

A payload is checked against `tasks.<capability>.payload_schema` of the active
configuration, else against the schema the capability's handler declared (the
agent that registered last with it). A payload that breaks it is refused (400,
naming the path) before anything is stored.

Schemas come from outside the region (any agent holding a registration token
declares one), so they are held to more than the meta-schema: nested at most
SCHEMA_MAX_DEPTH, every `$ref` resolvable inside the schema (nothing is ever
fetched), and payloads are checked by `jsonschema_rs`, whose regular expressions
cannot backtrack without bound (Python's `re` on `^(a+)+$` takes minutes for 35
characters, and a view runs on the web worker's event loop)."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import jsonschema_rs
from django.utils import timezone
from jsonschema import Draft202012Validator as MetaSchemaCheck
from jsonschema.exceptions import SchemaError

from project.jsonsafe import json_problem
from project.exceptions import Refused
from regions.models import HandlerDeclaration

# A declaration a web process read is trusted this long: a schema an agent
# declares takes effect within this time (one indexed read per capability per
# DECLARED_MAX_AGE per process, not one per submission).
DECLARED_MAX_AGE = 2.0
SCHEMA_MAX_BYTES = 64 * 1024
SCHEMA_MAX_DEPTH = 32


class PayloadInvalid(Refused):
    """The payload breaks its capability's schema; the message names the path
    (answered as a field error of `payload`)."""

    def __init__(self, problem: str):
        super().__init__("Invalid input.", fields={"payload": [problem]})
        self.problem = problem

    def __str__(self) -> str:
        return self.problem


@dataclass(frozen=True)
class Declared:
    version: str = ""
    timeout: int | None = None
    payload_schema: dict | None = None


NONE = Declared()
_declared: dict[str, tuple[float, Declared]] = {}
_validators: dict[str, jsonschema_rs.Draft202012Validator] = {}
_MAX_CACHED = 10_000


def schema_problem(schema) -> str | None:
    """Why `schema` cannot serve as a payload schema, or None."""
    if not isinstance(schema, dict):
        return "must be a JSON Schema object"
    problem = json_problem(schema, root="payload_schema", max_depth=SCHEMA_MAX_DEPTH)
    if problem:
        return f"is not usable: {problem}"
    if len(json.dumps(schema, separators=(",", ":"))) > SCHEMA_MAX_BYTES:
        return f"is larger than {SCHEMA_MAX_BYTES} bytes"
    try:
        MetaSchemaCheck.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return f"is not a valid JSON Schema{f' at {where}' if where else ''}: {exc.message}"
    try:
        _validator(schema)  # resolves every $ref now: a broken one is refused here, not at each submit
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
        return f"is not usable: {str(exc).splitlines()[0][:300]}"
    return None


def _no_retrieval(uri: str):
    raise ValueError(f"$ref {uri} is outside the schema; references are resolved within it only")


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
    `definition["payload_schema"]` when the key is there, even `{}`, else the
    handler's); returns the handler's declaration (its default timeout is the
    submission's next fallback)."""
    declared = handler_declared(capability)
    schema = definition["payload_schema"] if "payload_schema" in definition else declared.payload_schema
    if schema:
        try:
            errors = list(_validator(schema).iter_errors(payload))
        except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
            # Only a schema stored before these checks existed can get here.
            raise PayloadInvalid(f"the payload schema of capability {capability} is unusable "
                                 f"({str(exc).splitlines()[0][:200]}); tell its owner") from None
        if errors:
            error = min(errors, key=lambda e: [str(p) for p in e.instance_path])
            raise PayloadInvalid(f"{_path(error.instance_path)}: {error.message[:300]} "
                                 f"(payload schema of capability {capability})")
    return declared


def _validator(schema: dict) -> jsonschema_rs.Draft202012Validator:
    digest = hashlib.sha256(json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    validator = _validators.get(digest)
    if validator is None:
        validator = jsonschema_rs.Draft202012Validator(schema, retriever=_no_retrieval)
        if len(_validators) >= _MAX_CACHED:
            _validators.clear()
        _validators[digest] = validator
    return validator


def _path(parts) -> str:
    out = "payload"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out
