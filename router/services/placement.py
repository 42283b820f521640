"""Placing an agent (POST /register_agent): the router's registration token is
spent here, within its bounds (uses, expiry, rate per token), and the agent
leaves with a region and that region's grant (one use, already bounded)."""
from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from project.accounts import registration
from router.models import Region, RegistrationToken
from router.selectors import region_allowed
from router.services.regions import registration_grant
from router.services.routing import region_pick


@dataclass(frozen=True)
class Placement:
    region: Region
    grant: str | None


def agent_place(*, token: RegistrationToken, agent_id: str, capabilities: list[str], hint: str | None = None,
                client_ip: str | None = None) -> Placement:
    """Pick the agent's region and spend one use of `token` for it. The router
    keeps no record of agents, so every placement counts, a restart's too. A
    placement refused (no region, over the rate) spends no use."""
    registration.rate_check(key=f"router:regrate:{token.pk}", per_minute=settings.REGISTRATION_RATE_PER_TOKEN)
    region = region_pick(capabilities=capabilities, hint=hint, client_ip=client_ip,
                         allowed=region_allowed(token.regions))
    registration.token_use(token)  # one conditional UPDATE: of two placements racing for the last use, one wins
    return Placement(region=region, grant=registration_grant(region_id=region.region_id, agent_id=agent_id))
