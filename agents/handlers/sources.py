"""Where handlers read their input: a file below AGENT_DATA_ROOT or an HTTP(S) URL."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

import requests
from django.conf import settings

from agents.handlers import HandlerError

CHUNK = 64 * 1024


def resolve_local(path: str) -> Path:
    root = Path(settings.AGENT_DATA_ROOT).resolve()
    candidate = (root / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
    if candidate != root and root not in candidate.parents:
        raise HandlerError(f"{path} is outside this agent's data root {root}")
    if not candidate.is_file():
        raise HandlerError(f"no such file: {path}")
    return candidate


def open_chunks(source: str, headers: dict | None = None) -> Iterator[bytes]:
    """Yield the source's bytes in chunks, refusing more than AGENT_MAX_INPUT_BYTES."""
    if not isinstance(source, str) or not source:
        raise HandlerError("payload.source must be a file path or an http(s) URL")
    limit = settings.AGENT_MAX_INPUT_BYTES
    total = 0
    if source.startswith(("http://", "https://")):
        try:
            response = requests.get(source, stream=True, timeout=(5, 30), headers=headers or {})
        except requests.RequestException as exc:
            raise ConnectionError(f"cannot fetch {source}: {exc}") from exc  # transient: retried
        if response.status_code >= 500:
            raise ConnectionError(f"{source} answered {response.status_code}")
        if response.status_code != 200:
            raise HandlerError(f"{source} answered {response.status_code}")
        chunks = response.iter_content(CHUNK)
    else:
        handle = resolve_local(source).open("rb")
        chunks = iter(lambda: handle.read(CHUNK), b"")
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise HandlerError(f"{source} is larger than the {limit}-byte input limit")
        yield chunk


def read_text_lines(source: str, headers: dict | None = None) -> Iterator[str]:
    raw = io.BytesIO()
    for chunk in open_chunks(source, headers):
        raw.write(chunk)
    try:
        text = raw.getvalue().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HandlerError(f"{source} is not UTF-8 text: {exc}") from exc
    return iter(text.splitlines())
