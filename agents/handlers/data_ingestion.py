"""Read CSV or JSON-lines records, validate them, hand them to the region to store.

Valid records travel back in the result (key ``records``) and the region stores
them in its own database in the same transaction that accepts the result, so a
fenced (stale) attempt stores nothing and a retried one cannot store twice.
"""
from __future__ import annotations

import csv
import hashlib
import json

from django.conf import settings

from agents.handlers import Context, HandlerError, handler
from agents.handlers.sources import read_text_lines

TYPES = {"str": str, "int": int, "float": float, "bool": bool}
MAX_ERRORS_REPORTED = 20


def _coerce(value, kind: str):
    if kind == "str":
        return str(value)
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError("boolean is not an integer")
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{value!r} is not a boolean")
    raise ValueError(kind)


def _schema(payload: dict) -> dict[str, str]:
    schema = payload.get("schema", {})
    if not isinstance(schema, dict) or any(v not in TYPES for v in schema.values()):
        raise HandlerError(f"payload.schema maps field names to one of {sorted(TYPES)}")
    return schema


def _rows(payload: dict, lines):
    fmt = payload.get("format") or ("csv" if str(payload.get("source", "")).endswith(".csv") else "jsonl")
    if fmt == "csv":
        for line_no, row in enumerate(csv.DictReader(lines), start=2):
            yield line_no, row, None
    elif fmt == "jsonl":
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield line_no, None, f"invalid JSON: {exc.msg}"
                continue
            yield line_no, row, None if isinstance(row, dict) else "not a JSON object"
    else:
        raise HandlerError("payload.format must be 'csv' or 'jsonl'")


def validate(row: dict, schema: dict[str, str], required: list[str]) -> dict:
    missing = [f for f in required if row.get(f) in (None, "")]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    clean = dict(row)
    for field, kind in schema.items():
        if row.get(field) not in (None, ""):
            try:
                clean[field] = _coerce(row[field], kind)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{field}: {exc}") from exc
    return clean


@handler("data_ingestion")
def data_ingestion(payload: dict, ctx: Context) -> dict:
    schema = _schema(payload)
    required = payload.get("required", list(schema))
    records, errors, total = [], [], 0
    digest = hashlib.sha256()
    for line_no, row, problem in _rows(payload, read_text_lines(payload.get("source"), ctx.bearer(payload))):
        total += 1
        if problem is None:
            try:
                row = validate(row, schema, required)
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            if len(errors) < MAX_ERRORS_REPORTED:
                errors.append({"line": line_no, "error": problem})
            continue
        if len(records) >= settings.AGENT_MAX_RECORDS:
            raise HandlerError(f"more than {settings.AGENT_MAX_RECORDS} valid records; split the input")
        records.append({"line": line_no, "data": row})
        digest.update(json.dumps(row, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    return {
        "records_total": total,
        "records_valid": len(records),
        "records_invalid": total - len(records),
        "errors": errors,
        "checksum": f"sha256:{digest.hexdigest()}",
        "records": records,
    }
