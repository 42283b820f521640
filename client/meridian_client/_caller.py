"""One request, retried where safe: the state a client keeps (URL, key,
timeouts, what it learned) and the request loop every operation goes through
(retries with backoff, Retry-After, redirects, the error map)."""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urljoin, urlsplit

from meridian_client._effects import Failure, Gen, Reply, Send, Sleep
from meridian_client._refs import TASKS_PATH
from meridian_client._refusals import error_body
from meridian_client._retry import backoff, parse_retry_after
from meridian_client._version import __version__
from meridian_client.errors import (APIError, ForwardUncertain, MeridianError, NoRegion, RateLimited, ServerError,
                                    TransportError, Unavailable, error_from_answer)

MAX_REDIRECTS = 5


class NeverSent(Exception):
    """The request never reached the server (for route-then-submit's failover)."""

    def __init__(self, failure: Failure):
        super().__init__(str(failure.error))
        self.failure = failure


@dataclass
class Caller:
    """Shared state of a client and its one request: its URL, key, timeouts and
    what it learned (whether its URL is a router or a region, where each region is)."""

    url: str
    api_key: str
    timeout: float = 30.0
    deadline: float = 120.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    rand: Callable[[], float] = random.random
    clock: Callable[[], float] = time.monotonic
    region_urls: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must be an http(s) URL, not {self.url!r}")
        if not self.api_key:
            raise ValueError("an API key is required (api_key=..., or MERIDIAN_API_KEY for the CLI)")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json",
                "User-Agent": f"meridian-client/{__version__}"}

    # --- one request, retried where safe ------------------------------------------
    def call(self, method: str, url: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
             safe: bool, read_timeout: float | None = None, within: float | None = None,
             failover: bool = False) -> Gen[Reply]:
        """Send until an answer below 400 (returned) or an error that is final
        (raised). Retried, with backoff, within ``within`` seconds (the client's
        deadline): 429 and 503 always (they say nothing was done; Retry-After
        honoured); other 5xx and dropped connections only when ``safe`` (a read,
        or a submission carrying its idempotency key); a request that never
        left, always (unless ``failover``: then raised at once as NeverSent, for
        the caller to try elsewhere). A 307/308 is followed here, re-sending the
        key (httpx drops it across origins) and noting where the region is."""
        end = self.clock() + (self.deadline if within is None else within)
        attempt = redirects = 0
        while True:
            outcome = yield Send(method, url, json=json, params=params, read_timeout=read_timeout)
            error: MeridianError
            retry_after = None
            if isinstance(outcome, Failure):
                if failover and not outcome.connected:
                    raise NeverSent(outcome)
                error = TransportError(f"{method} {url}: {type(outcome.error).__name__}: {outcome.error}")
                if outcome.connected and not safe:
                    raise error from outcome.error
            else:
                assert isinstance(outcome, Reply)
                if outcome.status in (307, 308) and "location" in outcome.headers:
                    redirects += 1
                    if redirects > MAX_REDIRECTS:
                        raise TransportError(f"{method} {url}: more than {MAX_REDIRECTS} redirects")
                    url = urljoin(outcome.url, outcome.headers["location"])
                    if urlsplit(outcome.url).scheme == "https" and urlsplit(url).scheme != "https":
                        # The key is sent again to the Location: never in the clear.
                        raise TransportError(f"{method} {outcome.url}: refused to follow a redirect from https "
                                             f"to {url} with the API key")
                    params = None  # the Location carries the query
                    self._learn_redirect(outcome, url)
                    continue
                if outcome.status < 400:
                    return outcome
                retry_after = parse_retry_after(outcome.headers.get("retry-after"))
                error = error_from_answer(outcome.status, error_body(outcome.body), retry_after=retry_after,
                                          url=outcome.url)
                if not self._retryable(error, safe):
                    raise error
            delay = backoff(attempt, retry_after=retry_after, base=self.backoff_base, cap=self.backoff_cap,
                            rand=self.rand)
            if self.clock() + delay > end:
                raise error
            yield Sleep(delay)
            attempt += 1

    @staticmethod
    def _retryable(error: APIError, safe: bool) -> bool:
        if isinstance(error, NoRegion):
            return False  # no region serves it: waiting the deadline out would only hide that
        if isinstance(error, (RateLimited, Unavailable)):
            return True
        return safe and isinstance(error, ServerError) and not isinstance(error, ForwardUncertain)

    def _learn_redirect(self, reply: Reply, location: str) -> None:
        region_id = reply.body.get("region_id") if isinstance(reply.body, dict) else None
        base = location.split(TASKS_PATH, 1)[0] if TASKS_PATH in location else None
        if isinstance(region_id, str) and base:
            self.region_urls[region_id] = base

    def server_info(self) -> Gen[dict[str, Any]]:
        """What the client's URL is ({"role": "router"|"region", "region_id"}), asked once (/healthz)."""
        if self.info is None:
            reply = yield from self.call("GET", f"{self.url}/healthz", safe=True)
            body = reply.body if isinstance(reply.body, dict) else {}
            self.info = {"role": body.get("role", "region"), "region_id": body.get("region_id")}
        return self.info
