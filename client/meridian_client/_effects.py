"""What an operation of the core asks of its driver, and what it is sent back.

An operation is a generator: it yields a :class:`Send` (an HTTP request) and is
sent back a :class:`Reply` or a :class:`Failure`, yields a :class:`Sleep`, or
yields an :class:`Emit` (a value for an iterator such as ``as_completed``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Generator, Mapping, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    """An HTTP request. ``read_timeout`` overrides the client's (long polls)."""

    method: str
    url: str
    json: Any = None
    params: Mapping[str, Any] | None = None
    read_timeout: float | None = None


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Emit:
    """A value for the caller of an iterating operation (as_completed)."""

    value: Any


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: Any  # the decoded JSON, or the text when it is not JSON
    url: str


@dataclass(frozen=True)
class Failure:
    """The request got no answer. ``connected`` False: it never left (refused,
    connect timeout, TLS handshake), so sending it again cannot do anything twice."""

    error: Exception
    connected: bool


Step = Send | Sleep | Emit
Outcome = Reply | Failure | None
Gen = Generator[Step, Outcome, T]


def reply_from(status: int, headers: Mapping[str, str], content: bytes, url: str) -> Reply:
    """A Reply from raw HTTP parts (the drivers' one parse)."""
    body: Any = None
    if content:
        try:
            body = json.loads(content)
        except ValueError:
            body = content.decode("utf-8", "replace")
    return Reply(status=status, headers={k.lower(): v for k, v in headers.items()}, body=body, url=url)
