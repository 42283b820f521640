"""Hash a file and optionally gzip it next to the agent's outputs; report sizes."""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from django.conf import settings

from agents.handlers import Context, HandlerError, handler
from agents.handlers.sources import open_chunks

ALGORITHMS = ("sha256", "sha1", "md5", "blake2b")


@handler("file_processing")
def file_processing(payload: dict, ctx: Context) -> dict:
    algorithms = payload.get("hash", ["sha256"])
    if isinstance(algorithms, str):
        algorithms = [algorithms]
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown:
        raise HandlerError(f"unknown hash {unknown[0]!r}; choose from {', '.join(ALGORITHMS)}")
    compress = payload.get("compress", "gzip")
    if compress not in ("gzip", None, "none"):
        raise HandlerError("payload.compress must be 'gzip' or 'none'")
    hashers = {name: hashlib.new(name) for name in algorithms}
    out_path = None
    out = None
    if compress == "gzip":
        out_dir = Path(settings.AGENT_DATA_ROOT) / "outputs"
        out_dir.mkdir(parents=True, exist_ok=True)
        out_path = out_dir / f"{ctx.task_id}.gz"
        out = gzip.open(out_path, "wb", compresslevel=int(payload.get("level", 6)))
    size = 0
    try:
        for chunk in open_chunks(payload.get("source"), ctx.bearer(payload)):
            size += len(chunk)
            for h in hashers.values():
                h.update(chunk)
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
    result = {"source": payload.get("source"), "size_bytes": size,
              "digests": {name: h.hexdigest() for name, h in hashers.items()}}
    if out_path is not None:
        compressed = out_path.stat().st_size
        result.update(compressed_path=str(out_path), compressed_bytes=compressed,
                      ratio=round(compressed / size, 4) if size else None)
    return result
