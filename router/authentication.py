"""The credentials the router takes besides API keys: a registration token (an
agent asking where to join) and a region's token (its summary pushes, as itself
only). API keys: project.accounts."""
from __future__ import annotations

from project.accounts.authentication import REGION_TOKEN, REGISTRATION_TOKEN, BearerAuthentication, Principal
from project.exceptions import credential_refusals
from router.services.regions import region_authenticate, registration_token_check


class RegistrationTokenAuthentication(BearerAuthentication):
    """request.auth: the RegistrationToken (the regions it may send an agent to)."""

    scheme = REGISTRATION_TOKEN

    def verify(self, raw, request):
        with credential_refusals():
            return Principal(), registration_token_check(raw)


class RegionTokenAuthentication(BearerAuthentication):
    """request.auth: the Region whose token it is."""

    scheme = REGION_TOKEN

    def verify(self, raw, request):
        with credential_refusals():
            return Principal(), region_authenticate(raw)
