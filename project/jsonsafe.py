"""Bounds on JSON from outside: what every API and every queue consumer checks
before a value goes anywhere a deep, huge or unstorable value could hurt.

Three things break a Python/PostgreSQL system that accepted "any JSON":
- depth: pickling, copying or re-encoding a value nested ~1,000 deep raises
  RecursionError, and in a Celery prefork worker that error happens in the
  parent while handing a message to its pool: the worker dies, and dies again
  on every restart on the same message;
- text PostgreSQL cannot store: NUL (jsonb and text refuse \\u0000) and lone
  UTF-16 surrogates (not encodable as UTF-8), both legal in JSON text;
- numbers JSON cannot carry back out: NaN and ±Infinity (Python's json reads
  "1e400" as inf), which jsonb refuses and strict clients cannot parse.

`json_problem` walks a value iteratively (it cannot itself overflow the stack)
and names the first problem with its path, for a 400 or a dead-letter reason.
"""
from __future__ import annotations

import json
import math

# Deep enough for any honest document, far from the ~1,000 frames where
# Python's recursive encoders and pickle give up.
MAX_DEPTH = 64


class JsonRejected(ValueError):
    """A JSON value that is outside the bounds (the message names the problem)."""


def _path(parts: tuple) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate (not valid Unicode text)"
    return None


def json_problem(value, *, max_depth: int = MAX_DEPTH, root: str = "") -> str | None:
    """None if `value` is plain, bounded, storable JSON; else what is wrong and where."""
    stack: list[tuple[object, int, tuple]] = [(value, 1, (root,) if root else ())]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                return f"{_path(path)}: nested deeper than {max_depth} levels"
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        return f"{_path(path)}: object keys must be strings"
                    problem = _text_problem(key)
                    if problem:
                        return f"{_path(path)}: a key {problem}"
                    stack.append((child, depth + 1, path + (key[:40],)))
            else:
                stack.extend((child, depth + 1, path + (i,)) for i, child in enumerate(item))
        elif isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return f"{_path(path)}: {problem}"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{_path(path)}: numbers must be finite (no NaN or Infinity)"
        elif item is None or isinstance(item, (bool, int)):
            continue
        else:
            return f"{_path(path)}: {type(item).__name__} is not a JSON value"
    return None


def json_check(value, *, max_depth: int = MAX_DEPTH, root: str = ""):
    """`value` itself, or JsonRejected naming the problem."""
    problem = json_problem(value, max_depth=max_depth, root=root)
    if problem:
        raise JsonRejected(problem)
    return value


def json_size(value) -> int:
    """Bytes of the compact encoding (the value must have passed json_check)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def json_loads_bounded(text: str | bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH):
    """Parse untrusted JSON text: JsonRejected for anything too big, too deep,
    malformed or unstorable, never RecursionError or a non-finite number."""
    if len(text) > max_bytes:
        raise JsonRejected(f"body of {len(text)} bytes is over the limit of {max_bytes} bytes")
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise JsonRejected(f"nested deeper than {max_depth} levels") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise JsonRejected(f"not valid JSON: {str(exc)[:200]}") from None
    return json_check(value, max_depth=max_depth)


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON")
