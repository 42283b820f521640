"""The region directory as routing reads it: cached per process.

At most every DIRECTORY_CHECK_SECONDS one small aggregate query asks whether
anything changed; only the regions whose summary arrived since are re-read
(all of them if a region was added, removed or toggled). Summaries come every
minute per region, so routing answers lag the newest summary by at most that.
"""
from __future__ import annotations

import threading
import time
from datetime import timedelta

from django.db.models import Count, Max, Q

from router.models import Region

DIRECTORY_CHECK_SECONDS = 0.5
# Summaries committed out of order by concurrent requests: look back this far.
_LOOKBACK = timedelta(seconds=5)
_lock = threading.Lock()
_cache: dict = {"shape": None, "last": None, "regions": {}, "checked": 0.0}


def regions_directory() -> list[Region]:
    now = time.monotonic()
    if now - _cache["checked"] >= DIRECTORY_CHECK_SECONDS:
        with _lock:
            _refresh(now)
    return list(_cache["regions"].values())


def _refresh(now: float) -> None:
    stats = Region.objects.aggregate(n=Count("id"), ids=Max("id"), on=Count("id", filter=Q(enabled=True)),
                                     last=Max("received_at"))
    shape = (stats["n"], stats["ids"], stats["on"])
    if shape != _cache["shape"]:
        _cache["regions"] = {r.pk: r for r in Region.objects.filter(enabled=True)}
    elif stats["last"] != _cache["last"] and stats["last"] is not None:
        since = (_cache["last"] or stats["last"]) - _LOOKBACK
        for region in Region.objects.filter(enabled=True, received_at__gte=since):
            _cache["regions"][region.pk] = region
    _cache.update(shape=shape, last=stats["last"], checked=now)


def regions_directory_reset() -> None:
    with _lock:
        _cache.update(shape=None, last=None, regions={}, checked=0.0)
