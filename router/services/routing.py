"""Routing answers from the cached directory: the regions for a capability
(route), for every capability of a batch (route_all), and the region a
registering agent is sent to (region_pick)."""
from __future__ import annotations

import heapq
import ipaddress
import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from router.models import AddressRule, Region
from router.selectors import (DirectoryEntry, ForwardPenalty, capability_counts, directory, directory_entries,
                              forward_penalties, region_is_stale)
from router.services.refusals import Forbidden, NoRegion, RouterError

logger = logging.getLogger("router.services")  # the router's log stream, whichever module writes


_STALE = "stale: no summary for more than 3 intervals"


@dataclass
class RouteAnswer:
    """The ranked regions, and why the others were passed over. A route reads
    only the regions whose summary names the capability (or the pinned one):
    `passed_over` holds those of them it passed over; the directory's other
    regions are named only when asked (skipped_first, skipped)."""

    regions: list[dict]
    passed_over: dict[str, str] = field(default_factory=dict)
    capability: str = ""
    residency: str | None = None
    directory: tuple[DirectoryEntry, ...] = ()  # every region, by region_id, when the route read only some
    serving: tuple[int, ...] = ()  # the pks of the regions it read
    now: datetime | None = None

    def why_passed_over(self, entry: DirectoryEntry) -> str:
        """Why the route passed over a region, read or not: stale, then not resident, then not serving."""
        if entry.stale(self.now):
            return _STALE
        if self.residency and self.residency not in entry.region.labels:
            return f"residency: not labelled {self.residency}"
        return f"no agent serves {self.capability}"

    def skipped_first(self, limit: int) -> tuple[dict[str, str], int]:
        """The first `limit` regions passed over, by region id, with why; and how many were."""
        if not self.directory:  # a pinned route: the one region
            return dict(sorted(self.passed_over.items())[:limit]), len(self.passed_over)
        total = len(self.passed_over) + len(self.directory) - len(self.serving)
        shown: dict[str, str] = {}
        if total:
            read = set(self.serving)
            for entry in self.directory:
                if len(shown) >= limit:
                    break
                if entry.region_id in self.passed_over:
                    shown[entry.region_id] = self.passed_over[entry.region_id]
                elif entry.pk not in read:
                    shown[entry.region_id] = self.why_passed_over(entry)
        return shown, total

    @property
    def skipped(self) -> dict[str, str]:
        """Every region passed over, by region id, with why."""
        return self.skipped_first(len(self.directory) + len(self.passed_over))[0]


def _healthy_entries(now: datetime) -> tuple[list[DirectoryEntry], dict[str, str]]:
    healthy, skipped = [], {}
    for entry in directory_entries():
        if entry.stale(now):
            skipped[entry.region.region_id] = _STALE
        else:
            healthy.append(entry)
    return healthy, skipped


# More of a region's recent forwards failed than were answered: it ranks after
# every region that answers more than it fails (and is still used when no other serves).
FAILING_RATE = 0.5


def region_ceiling(region: Region) -> int:
    """The most agents the region's summaries are believed for."""
    return region.capacity_ceiling or settings.ROUTER_REGION_CEILING


def route(*, capability: str, residency: str | None = None, region: str | None = None,
          count: int = 3) -> RouteAnswer:
    """Regions that serve the capability, ranked by idle agents for it (held to
    the ceiling, weighted, less the share of recent forwards that failed), then
    by freshness. Residency is a hard constraint, and so is a pinned region.

    One pass over the regions that name the capability in the cached
    directory's index (selectors.Directory), one dict lookup per region: at 500
    regions x 200 capabilities a query costs well under a millisecond, and the
    number of capabilities does not enter it."""
    now = timezone.now()
    pinned = region
    snapshot = directory()
    skipped: dict[str, str] = {}
    answer = RouteAnswer(regions=[], passed_over=skipped, capability=capability, residency=residency, now=now)
    if pinned:
        entries = [snapshot.by_region_id[pinned]] if pinned in snapshot.by_region_id else []
        if not entries:
            skipped[pinned] = "no such region (or disabled)"
    else:
        # Only the regions whose summary names the capability: the others are passed over unread.
        answer.directory, answer.serving = snapshot.entries, snapshot.serving.get(capability, ())
        entries = [snapshot.by_pk[pk] for pk in answer.serving]
    penalties = forward_penalties()
    default_ceiling = settings.ROUTER_REGION_CEILING
    candidates = []
    for position, entry in enumerate(entries):
        if (entry.stale_after is not None and now <= entry.stale_after
                and not (residency and residency not in entry.region.labels)
                and type(cap := entry.caps.get(capability)) is dict and type(total := cap.get("count")) is int
                and total > 0 and type(idle := cap.get("idle", 0)) is int):
            # selectors.capability_counts and region_ceiling inlined (a call per region would be most of the query)
            region = entry.region
            ceiling = region.capacity_ceiling or default_ceiling
            if not 0 <= idle <= total <= ceiling:  # beyond what the operator believes (or a row before the bounds)
                total = min(total, ceiling)
                idle = min(max(idle, 0), total)
            penalty = penalties.get(entry.pk) if penalties else None
            rate = penalty.rate if penalty else 0.0
            weight = region.weight
            # Larger first: not failing most forwards, weighed above 0, weighted idle agents
            # less the share of recent forwards that failed, the fewer failures, the fresher;
            # then the earlier region_id (-position: entries are in region_id order).
            candidates.append((rate <= FAILING_RATE, weight > 0, idle * weight * (1.0 - rate), -rate,
                               region.received_at, -position, region, total, idle, penalty))
        else:
            skipped[entry.region_id] = answer.why_passed_over(entry)
    if not candidates:
        everyone = answer.skipped  # by region id
        why = "; ".join(f"{r}: {reason}" for r, reason in everyone.items()) or "no regions registered"
        raise NoRegion(f"No eligible region for capability {capability}"
                       f"{f' with residency {residency}' if residency else ''}"
                       f"{f' in region {pinned}' if pinned else ''} ({why}).", skipped=everyone)
    # The `count` best, compared as tuples (no key function: the comparison stays in C; -position
    # is unique, so nothing after it is compared). A region weighed 0 is chosen only when no
    # other serves; one failing most of its forwards ranks after every region that does not.
    best = heapq.nlargest(count, candidates)
    answer.regions = [{
        "region_id": region.region_id,
        "orchestrator_url": region.orchestrator_url,
        "idle": idle,
        "count": total,
        "labels": region.labels,
        "summary_age_seconds": round((now - received).total_seconds(), 3),
        **_forward_failures(penalty),
    } for *_, received, _position, region, total, idle, penalty in best]
    return answer


def _forward_failures(penalty: ForwardPenalty | None) -> dict:
    """Why a region ranks lower than its capacity says: the share of its recent
    forwards that failed, and how the latest failed."""
    if penalty is None:
        return {"forward_failure_rate": 0.0}
    return {"forward_failure_rate": round(penalty.rate, 3), "last_forward_failure": penalty.last_failure}


def region_pick(*, capabilities: list[str], hint: str | None, client_ip: str | None,
                allowed: list[str] | None) -> Region:
    """For a registering agent: explicit hint, then address rules, then the
    healthy region with the most spare capacity for its capabilities. `allowed`
    limits the regions (the registration token's), None means all."""
    now = timezone.now()
    if hint:
        region = Region.objects.filter(region_id=hint, enabled=True).first()
        if region is None:
            raise RouterError(f"Unknown region {hint}.")
        if allowed is not None and hint not in allowed:
            raise Forbidden(f"This registration token is not valid for region {hint}.")
        if region_is_stale(region, now):
            raise NoRegion(f"Region {hint} is not healthy (no recent summary).")
        return region
    entries, _ = _healthy_entries(now)
    entries = [e for e in entries if allowed is None or e.region.region_id in allowed]
    healthy = [e.region for e in entries]
    if not healthy:
        raise NoRegion("No healthy region can take this agent"
                       f"{' (token limited to ' + ', '.join(allowed) + ')' if allowed is not None else ''}.")
    if client_ip:
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            address = None
        by_id = {r.pk: r for r in healthy}
        for rule in AddressRule.objects.filter(region_id__in=by_id):
            try:
                if address is not None and address in ipaddress.ip_network(rule.cidr, strict=False):
                    return by_id[rule.region_id]
            except ValueError:
                logger.warning("address rule %s has an invalid CIDR", rule.pk)

    def spare(entry: DirectoryEntry) -> tuple[bool, float, float]:
        region = entry.region
        ceiling = region_ceiling(region)
        idle = min(sum((capability_counts(entry.caps, c) or {"idle": 0})["idle"] for c in capabilities), ceiling)
        # weighted above 0 first; most idle for these (held to the ceiling, weighted), then the most agents overall
        return (region.weight <= 0, -idle * region.weight, -min(region.available_agents, ceiling) * region.weight)

    return min(entries, key=spare).region


def route_all(*, capabilities: list[str], residency: str | None = None, region: str | None = None,
              count: int = 3) -> list[dict]:
    """The regions that serve every one of `capabilities`, ranked by the idle
    agents of their scarcest capability less their recent forward failures,
    then by freshness (route's order for one). A capability no region serves raises route's NoRegion naming it."""
    names = list(dict.fromkeys(capabilities))
    if len(names) == 1:
        return route(capability=names[0], residency=residency, region=region, count=count).regions
    everywhere = len(directory_entries()) or 1
    ranked: dict[str, dict] = {}
    served: list[set[str]] = []
    for name in names:
        regions = route(capability=name, residency=residency, region=region, count=everywhere).regions
        served.append({r["region_id"] for r in regions})
        for answer in regions:
            best = ranked.setdefault(answer["region_id"], dict(answer))
            if answer["idle"] < best["idle"]:
                best.update(idle=answer["idle"], count=answer["count"])
    common = set.intersection(*served)
    if not common:
        raise NoRegion(f"No eligible region serves all of {', '.join(names)}"
                       f"{f' with residency {residency}' if residency else ''}"
                       f"{f' in region {region}' if region else ''}: split the batch.",
                       skipped={})
    # route's order for the scarcest capability: recent forward failures count as they do there.
    def order(answer: dict) -> tuple:
        rate = answer["forward_failure_rate"]
        return (rate > FAILING_RATE, -answer["idle"] * (1.0 - rate), rate, answer["summary_age_seconds"],
                answer["region_id"])

    best = sorted((ranked[r] for r in common), key=order)
    return best[:count]
