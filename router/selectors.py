"""The region directory as routing reads it: cached per process.

At most every DIRECTORY_CHECK_SECONDS one small aggregate query asks whether
anything changed; then the (id, received_at) of the regions whose summary
arrived lately are compared with the cached ones, and only those that differ
are re-read (all of them if a region was added, removed or toggled). A summary
this process ingests is put in its directory at once (directory_put). With
500 regions summarizing every minute, that is ~4 rows a check, not 40, and
never the whole directory: a whole reload of 500 regions x 200 capabilities
costs ~100 ms of JSON alone, which a route query behind it would wait for.

Each entry carries the moment it turns stale, so a route query does one dict
lookup per region and no per-region arithmetic. Capabilities stay as stored,
clamped when read: clamping 500 x 200 entries up front would triple a reload.

A snapshot also indexes the regions by the capabilities their summaries name,
so a route reads only the regions that serve the capability. A summary that
names the same capabilities as the region's previous one (the common case)
leaves the index as it was; one that adds or drops some rebuilds those
capabilities' entries only. Readers get an immutable snapshot: a refresh
replaces it, never mutates what a reader iterates.
"""
from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Q
from django.utils import timezone

from router import inputs
from router.models import ForwardOutcomes, Region

DIRECTORY_CHECK_SECONDS = 0.5
STALE_AFTER_INTERVALS = 3
# Summaries committed out of order by concurrent requests: look back this far.
_LOOKBACK = timedelta(seconds=5)
_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """One enabled region as routing reads it."""

    region: Region  # operator fields cleaned (region_clean)
    caps: dict  # region.capabilities as stored ({} if not an object): entries are clamped as read
    stale_after: datetime | None  # received_at + 3 intervals; None: never summarized
    pk: int  # region.pk and region.region_id, read once: Model.pk is a property, a route reads it per region
    region_id: str

    def stale(self, now: datetime) -> bool:
        return self.stale_after is None or now > self.stale_after


@dataclass(frozen=True, slots=True)
class Directory:
    """One snapshot of the enabled regions."""

    entries: tuple[DirectoryEntry, ...]  # by region_id
    by_pk: dict[int, DirectoryEntry]
    by_region_id: dict[str, DirectoryEntry]
    serving: dict[str, tuple[int, ...]]  # capability -> pks of the regions whose summary names it, by region_id

    @classmethod
    def of(cls, by_pk: dict[int, DirectoryEntry], serving: dict[str, tuple[int, ...]] | None = None) -> "Directory":
        entries = tuple(sorted(by_pk.values(), key=lambda e: e.region_id))
        if serving is None:
            index: dict[str, list[int]] = {}
            for entry in entries:
                for name in entry.caps:
                    index.setdefault(name, []).append(entry.pk)
            serving = {name: tuple(pks) for name, pks in index.items()}
        return cls(entries=entries, by_pk=by_pk, by_region_id={e.region_id: e for e in entries}, serving=serving)

    def with_changes(self, by_pk: dict[int, DirectoryEntry], changed) -> "Directory":
        """The snapshot of `by_pk`, which differs from this one's in the regions
        `changed` (pks) only: the index is rebuilt for the capabilities whose
        serving regions changed, and kept for all others."""
        touched: set[str] = set()
        for pk in changed:
            before, after = self.by_pk.get(pk), by_pk.get(pk)
            touched |= (before.caps.keys() if before else set()) ^ (after.caps.keys() if after else set())
        fresh = Directory.of(by_pk, self.serving)
        if not touched:
            return fresh
        serving = dict(self.serving)
        for name in touched:
            pks = tuple(e.pk for e in fresh.entries if name in e.caps)
            if pks:
                serving[name] = pks
            else:
                serving.pop(name, None)
        return replace(fresh, serving=serving)


_EMPTY = Directory(entries=(), by_pk={}, by_region_id={}, serving={})
_cache: dict = {"shape": None, "last": None, "directory": _EMPTY, "checked": -math.inf, "forwarded": None}


def directory() -> Directory:
    """The enabled regions as of at most DIRECTORY_CHECK_SECONDS ago."""
    now = time.monotonic()
    if now - _cache["checked"] >= DIRECTORY_CHECK_SECONDS:
        with _lock:
            if now - _cache["checked"] >= DIRECTORY_CHECK_SECONDS:
                _refresh(now)
    return _cache["directory"]


def directory_entries() -> tuple[DirectoryEntry, ...]:
    """The enabled regions, by region_id, as of at most DIRECTORY_CHECK_SECONDS ago."""
    return directory().entries


def regions_directory() -> list[Region]:
    return [entry.region for entry in directory_entries()]


def _refresh(now: float) -> None:
    # One row at most per region in forward_outcomes: the join adds no row to count.
    stats = Region.objects.aggregate(n=Count("id"), ids=Max("id"), on=Count("id", filter=Q(enabled=True)),
                                     last=Max("received_at"), forwarded=Max("forward_outcomes__at"))
    shape = (stats["n"], stats["ids"], stats["on"])
    current = _cache["directory"]
    if shape != _cache["shape"]:
        _cache["directory"] = Directory.of({r.pk: directory_entry(r) for r in Region.objects.filter(enabled=True)})
    elif stats["last"] != _cache["last"] and stats["last"] is not None:
        since = (_cache["last"] or stats["last"]) - _LOOKBACK
        recent = Region.objects.filter(enabled=True, received_at__gte=since).values_list("pk", "received_at")
        regions = current.by_pk
        changed = [pk for pk, received in recent if pk not in regions or regions[pk].region.received_at != received]
        if changed:
            fresh = {r.pk: directory_entry(r) for r in Region.objects.filter(pk__in=changed, enabled=True)}
            _cache["directory"] = current.with_changes({**regions, **fresh}, fresh)
    if stats["forwarded"] != _cache["forwarded"]:  # a forward's outcome recorded (here or elsewhere)
        _penalties_read()
    _cache.update(shape=shape, last=stats["last"], checked=now, forwarded=stats["forwarded"])


def directory_put(region: Region) -> None:
    """This process's directory takes a region just saved (a summary it
    ingested): routing here sees it at once, without re-reading anything."""
    entry = directory_entry(copy.copy(region))
    with _lock:
        current = _cache["directory"]
        if _cache["shape"] is None or region.pk not in current.by_pk:
            return  # not loaded yet, or a region the directory does not hold: the next refresh decides
        if not region.enabled:
            return
        received = current.by_pk[region.pk].region.received_at
        if received and region.received_at and region.received_at < received:
            return  # a newer summary is already here
        _cache["directory"] = current.with_changes({**current.by_pk, region.pk: entry}, (region.pk,))


def regions_directory_reset() -> None:
    with _lock:
        _cache.update(shape=None, last=None, directory=_EMPTY, checked=-math.inf, forwarded=None)
        _penalties.update(by_region={}, stale=False)


# --- forward outcomes as routing reads them ------------------------------------------

@dataclass(frozen=True, slots=True)
class ForwardPenalty:
    """A region whose forwards failed within ROUTER_FORWARD_PENALTY_WINDOW_SECONDS."""

    rate: float  # of its recent forwards, the share that failed (each weighed by its age)
    last_failure: str  # router.services.outcomes.FAILURES
    failed_at: float  # epoch seconds


_penalties: dict = {"by_region": {}, "stale": False}


def forward_penalties() -> dict[int, ForwardPenalty]:
    """{region pk: ForwardPenalty} of the regions whose latest failed forward is
    within ROUTER_FORWARD_PENALTY_WINDOW_SECONDS, as of the directory (call
    directory_entries first). The directory's check reads them again only when
    a forward's outcome was recorded since (the newest outcome's time rides on
    its aggregate): no query of its own while nothing is forwarded."""
    if _penalties["stale"]:
        _penalties_read()
    by_region = _penalties["by_region"]
    if not by_region:
        return by_region
    since = time.time() - float(settings.ROUTER_FORWARD_PENALTY_WINDOW_SECONDS)
    return {pk: penalty for pk, penalty in by_region.items() if penalty.failed_at >= since}


def forward_penalties_reset() -> None:
    """This process recorded an outcome: its next routing query reads them again."""
    _penalties["stale"] = True


def _penalties_read() -> None:
    _penalties["stale"] = False
    since = time.time() - float(settings.ROUTER_FORWARD_PENALTY_WINDOW_SECONDS)
    rows = ForwardOutcomes.objects.filter(failed_at__gte=since)
    _penalties["by_region"] = {row.region_id: penalty for row in rows
                               if (penalty := forward_penalty(row, since=since))}


def forward_penalty(row: ForwardOutcomes | None, *, since: float | None = None) -> ForwardPenalty | None:
    """The row's penalty, None when no forward failed since `since` (by default
    the window back from now). Bounded as read: the row may come from SQL."""
    if since is None:
        since = time.time() - float(settings.ROUTER_FORWARD_PENALTY_WINDOW_SECONDS)
    if row is None or row.failed_at is None or not row.failed_at >= since:
        return None
    failed, answered = max(row.failed, 0.0), max(row.answered, 0.0)
    rate = failed / (failed + answered) if failed + answered > 0 else 1.0
    if not 0.0 <= rate <= 1.0:  # NaN or infinities written by hand
        rate = 1.0
    return ForwardPenalty(rate=rate, last_failure=row.last_failure, failed_at=row.failed_at)


def region_forward_penalty(region: Region) -> ForwardPenalty | None:
    """The admin's and the metrics' read, from a region fetched with
    select_related("forward_outcomes")."""
    try:
        row = region.forward_outcomes
    except ForwardOutcomes.DoesNotExist:
        return None
    return forward_penalty(row)


def directory_entry(region: Region) -> DirectoryEntry:
    """The region, cleaned in place (its capabilities are read as stored, one
    entry at a time, by capability_counts or route's inline equivalent)."""
    region_clean(region, capabilities=False)
    caps = region.capabilities if type(region.capabilities) is dict else {}
    stale_after = None
    if region.received_at is not None:
        stale_after = region.received_at + timedelta(seconds=STALE_AFTER_INTERVALS * region.summary_interval)
    return DirectoryEntry(region=region, caps=caps, stale_after=stale_after, pk=region.pk, region_id=region.region_id)


def region_list() -> list[Region]:
    return [region_clean(r) for r in Region.objects.all()]


# --- rows as readers may trust them ---------------------------------------------
# Summaries are bounded on the way in (router/inputs.py), but a row may predate
# the bounds or come from the admin or SQL: readers hold it to the same bounds,
# so no stored value can fail a routing answer, a listing or /metrics.

def region_clean(region: Region, *, capabilities: bool = True) -> Region:
    """The region with its summary fields held to the bounds (in place, for
    reading only). The routing directory leaves the capabilities as stored and
    reads one entry at a time (capability_counts): cleaning 500 regions × 200
    capabilities on every reload would cost more than the reload itself."""
    if capabilities:
        region.capabilities = region_capabilities(region.capabilities)
    region.labels = region_labels(region.labels)
    region.summary_interval = region_interval(region.summary_interval)
    return region


def region_interval(value: Any) -> float:
    try:
        interval = float(value)
    except (TypeError, ValueError, OverflowError):
        return inputs.DEFAULT_SUMMARY_INTERVAL
    if math.isnan(interval):
        return inputs.DEFAULT_SUMMARY_INTERVAL
    return min(max(interval, inputs.MIN_SUMMARY_INTERVAL), inputs.MAX_SUMMARY_INTERVAL)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return min(max(value, 0), inputs.MAX_AGENTS)


def _counts(entry: Any) -> dict[str, int] | None:
    if not isinstance(entry, dict):
        return None
    count, idle = _count(entry.get("count")), _count(entry.get("idle", 0))
    if count is None or idle is None:
        return None
    return {"count": count, "idle": min(idle, count)}


def capability_counts(capabilities: Any, name: str) -> dict[str, int] | None:
    """{"count", "idle"} of one capability in a stored summary, clamped; None if absent or malformed."""
    return _counts(capabilities.get(name)) if isinstance(capabilities, dict) else None


def region_capabilities(value: Any) -> dict[str, dict[str, int]]:
    """{capability: {"count", "idle"}} with malformed entries left out and counts clamped."""
    if not isinstance(value, dict):
        return {}
    caps = {}
    for name, entry in value.items():
        if len(caps) >= inputs.MAX_CAPABILITIES:
            break
        counts = _counts(entry) if isinstance(name, str) and inputs.capability_name(name) else None
        if counts is not None:
            caps[name] = counts
    return caps


def region_labels(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [label for label in value if isinstance(label, str) and inputs.label_name(label)][:inputs.MAX_LABELS]


def region_allowed(value: Any) -> list[str] | None:
    """The region ids a registration token is limited to, None for all (an empty
    list). Operator data: anything but a list of ids limits it to what it names,
    so a malformed limit never opens the token to every region."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        return []
    return [name for name in value if isinstance(name, str)] if value else None


# --- the admin's views ------------------------------------------------------------

def region_capacity(region: Region) -> list[dict]:
    """[{"capability", "idle", "count"}] of a region's latest summary, by name."""
    caps = region_capabilities(region.capabilities)
    return [{"capability": name, **caps[name]} for name in sorted(caps)]


# --- staleness and configuration drift (the API's and the admin's reads) ------------

def region_is_stale(region: Region, now: datetime | None = None) -> bool:
    """No summary for longer than 3 intervals (by the router's clock)."""
    if region.received_at is None:
        return True
    now = now or timezone.now()
    interval = region_interval(region.summary_interval)  # a stored one may predate the bounds
    return now - region.received_at > timedelta(seconds=STALE_AFTER_INTERVALS * interval)


def region_health(region: Region, now: datetime | None = None) -> dict:
    age = (now or timezone.now()) - region.received_at if region.received_at else None
    return {"stale": region_is_stale(region, now), "summary_age_seconds": age.total_seconds() if age else None}


def config_drift() -> dict:
    """Group regions by the configuration commit their last summary reported."""
    commits: dict[str, dict] = {}
    for region in Region.objects.filter(enabled=True).order_by("region_id"):
        entry = commits.setdefault(region.config_version or "(none)", {"regions": [], "since": None})
        entry["regions"].append({"region_id": region.region_id, "since": region.config_since,
                                 "stale": region_is_stale(region)})
        if region.config_since and (entry["since"] is None or region.config_since < entry["since"]):
            entry["since"] = region.config_since
    return {"in_sync": len(commits) <= 1, "commits": commits}


def config_drift_groups(*, now=None) -> dict:
    """The drift page: the enabled regions grouped by the configuration commit
    their latest summary reported (config_drift, the API's view), the
    group most regions run first and marked as the majority (none on a tie),
    with each region's time on its commit and the commit's subject where
    summaries carry one."""
    now = now or timezone.now()
    drift = config_drift()
    regions = {r.region_id: r for r in Region.objects.filter(enabled=True)}
    groups = []
    for sha, entry in drift["commits"].items():
        members = []
        subject = ""
        for row in entry["regions"]:
            region = regions.get(row["region_id"])
            subject = subject or getattr(region, "config_subject", "") or ""
            since = row["since"]
            members.append({"region_id": row["region_id"], "since": since, "pk": region.pk if region else None,
                            "seconds": (now - since).total_seconds() if since else None,
                            "stale": region_is_stale(region, now) if region else row["stale"],
                            "orchestrator_url": region.orchestrator_url if region else ""})
        groups.append({"sha": sha if sha != "(none)" else "", "short": sha[:12] if sha != "(none)" else "",
                       "subject": subject, "regions": members, "since": entry["since"]})
    groups.sort(key=lambda g: (-len(g["regions"]), g["sha"] == "", g["sha"]))
    majority = None
    if groups and groups[0]["sha"] and (len(groups) == 1 or len(groups[0]["regions"]) > len(groups[1]["regions"])):
        majority = groups[0]["sha"]
    for group in groups:
        group["majority"] = group["sha"] == majority if majority else False
    return {"groups": groups, "majority": majority, "in_sync": drift["in_sync"],
            "regions": sum(len(g["regions"]) for g in groups)}


# --- the fleet overview (admin home, manage.py fleet_status) ------------------------

def fleet_overview(*, now=None) -> dict:
    """Every region with the age of its latest summary, fresh or stale, idle/total
    per capability, its configuration commit (short sha and subject) and whether
    it runs the majority's commit. One row per region (at most a few hundred),
    from the stored summaries: nothing per agent exists here."""
    now = now or timezone.now()
    drift = config_drift_groups(now=now)
    rows, totals = [], {}
    for region in Region.objects.all():
        caps = region_capacity(region)
        stale = region_is_stale(region, now)
        if region.enabled and not stale:
            for cap in caps:
                total = totals.setdefault(cap["capability"], {"capability": cap["capability"], "idle": 0,
                                                              "count": 0, "regions": 0})
                total["idle"] += cap["idle"]
                total["count"] += cap["count"]
                total["regions"] += 1
        sha = region.config_version
        rows.append({
            "region_id": region.region_id, "pk": region.pk, "enabled": region.enabled,
            "orchestrator_url": region.orchestrator_url, "labels": region_labels(region.labels),
            "received_at": region.received_at, "stale": stale,
            "age_seconds": (now - region.received_at).total_seconds() if region.received_at else None,
            "available_agents": min(region.available_agents, inputs.MAX_AGENTS), "capabilities": caps,
            "config_version": sha, "config_short": sha[:12], "config_subject": region.config_subject,
            "config_since": region.config_since,
            # A region that reported no commit (yet) shows "none reported", not drift.
            "drift": bool(region.enabled and sha and drift["majority"] and sha != drift["majority"]),
        })
    return {
        "role": "router", "now": now, "regions": rows,
        "capabilities": [totals[name] for name in sorted(totals)],
        "fresh": sum(1 for r in rows if r["enabled"] and not r["stale"]),
        "stale": sum(1 for r in rows if r["enabled"] and r["stale"]),
        "drift": drift,
    }
