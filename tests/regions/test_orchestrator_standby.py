"""Standby orchestrators on real processes: three orchestrators of one region
stand for the clock lease at the region's default lease (5 s, renewed every
1 s); one sends the clock jobs. Kill -9 the leader: a standby leads within the
lease. Freeze the next leader past its lease: the last one takes over; thawed,
the frozen one stands by and sends nothing. The fencing of a stale leader's
writes is tests/regions/test_leadership.py."""
import re
import signal
import time

import pytest

from tests.accounting import record
from tests.harness import wait_for

pytestmark = pytest.mark.faults

LEASE, RENEW = 5.0, 1.0
TIMING = {"ORCHESTRATOR_LEASE_SECONDS": str(LEASE), "ORCHESTRATOR_LEASE_RENEW_SECONDS": str(RENEW)}
SENT = re.compile(r"Sending due task reap \(regions\.agent_reap\)")


def _clock(region) -> dict:
    return region.call("GET", "/api/v1/region/status").json()["clock"]


def _sends(proc) -> int:
    return len(SENT.findall(proc.log.read_text(errors="replace")))


def _leader_proc(region, procs):
    clock = _clock(region)
    pid = int(clock["leader"].rsplit(":", 1)[1]) if clock["leader"] else None
    return next((p for p in procs if p.pid == pid), None), clock


def test_a_standby_takes_over_the_clock_jobs_from_a_killed_or_frozen_leader(fresh_region):
    region = fresh_region(**TIMING)
    procs = [region.orchestrator, region.start_orchestrator("orchestrator-2"), region.start_orchestrator("orchestrator-3")]
    wait_for(lambda: len(_clock(region)["orchestrators"]) == 3 and _clock(region)["leader"], 60,
             what="three orchestrators heard, one leading")
    leader, clock = _leader_proc(region, procs)
    assert leader is not None and len(clock["standbys"]) == 2, clock
    before = {p.name: _sends(p) for p in procs}
    wait_for(lambda: _sends(leader) >= before[leader.name] + 3, 20, what="three reaper ticks from the leader")
    # One sends: the standbys' beats tick without sending.
    assert all(_sends(p) == before[p.name] for p in procs if p is not leader), [p.tail() for p in procs]

    # --- kill -9: a standby leads within the lease ------------------------------------
    token = clock["token"]
    leader.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    new, clock = wait_for(lambda: (r := _leader_proc(region, procs)) and r[1]["token"] > token and r, LEASE + 10,
                          interval=0.1, what="a standby taking the lease")
    took_s = time.monotonic() - killed_at
    sends = _sends(new)
    wait_for(lambda: _sends(new) > sends, 10, what="a reaper tick from the new leader")
    ticked_s = time.monotonic() - killed_at
    assert new is not leader and clock["token"] == token + 1
    assert took_s <= LEASE + RENEW + 1.5, took_s

    # --- frozen past its lease: the last one takes over; thawed, it stands by ----------
    survivors = [p for p in procs if p is not leader]
    last = next(p for p in survivors if p is not new)
    token = clock["token"]
    new.signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        got, clock = wait_for(lambda: (r := _leader_proc(region, procs)) and r[1]["token"] > token and r,
                              LEASE + 10, interval=0.1, what="the last orchestrator taking the lease")
        frozen_took_s = time.monotonic() - frozen_at
        assert got is last, clock
        sends = _sends(last)
        wait_for(lambda: _sends(last) > sends, 10, what="a reaper tick from the last orchestrator")
        offset = new.log.stat().st_size
        stale_sends = _sends(new)
    finally:
        new.signal(signal.SIGCONT)
    woke = wait_for(lambda: (t := new.log.read_bytes()[offset:].decode(errors="replace"))
                    and "lost the clock lease" in t and t, 15, what="the thawed leader standing by")
    # It asked before it sent: not one tick from it after it woke.
    sends = _sends(last)
    wait_for(lambda: _sends(last) >= sends + 2, 10, what="two more ticks from the leader")
    assert _sends(new) == stale_sends, woke
    clock = _clock(region)
    assert clock["leader"].endswith(f":{last.pid}") and any(n.endswith(f":{new.pid}") for n in clock["standbys"]), \
        clock
    record(f"FAILOVER clock lease {LEASE:g} s (renew {RENEW:g} s), 3 orchestrators: kill -9 leader -> standby "
           f"leads in {took_s:.1f} s, first tick {ticked_s:.1f} s; SIGSTOP leader -> took over in "
           f"{frozen_took_s:.1f} s; thawed leader sent 0 ticks, stands by")

