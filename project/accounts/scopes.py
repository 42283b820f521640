"""What a caller may do on the API: scopes.

An API key carries the scopes chosen when it was made (`create_api_key --scope`,
shown in the admin). A person signed in to the admin gets on the API exactly
what their Django permissions give: one permission per scope
(`accounts.<scope with _ for :>`, e.g. `accounts.fleet_read`), all of them for a
superuser. `is_staff` alone grants nothing on the API: it only opens the admin.

A request the router forwarded carries the scopes of the caller's key at the
router (project/accounts/assertions.py).

A key without `tasks:read_all` sees only the tasks it submitted; one without
`tasks:operate` cancels and retries only those.
"""
from __future__ import annotations

from rest_framework.permissions import BasePermission

from project.accounts.assertions import Assertion
from project.accounts.models import SCOPES, ApiKey, scope_codename

EVERY_SCOPE = tuple(SCOPES)


def scopes_of(request) -> frozenset[str]:
    """The scopes of whoever made the request: its API key's, those the router
    asserted for a forwarded caller, or those its Django permissions give a
    signed-in person; none for anything else."""
    if isinstance(request.auth, ApiKey):
        scopes = request.auth.scopes  # a list of names (scopes_validate); anything else grants nothing
        return frozenset(s for s in scopes if isinstance(s, str) and s in SCOPES) if isinstance(scopes, list) \
            else frozenset()
    if isinstance(request.auth, Assertion):
        return frozenset(request.auth.scopes) & frozenset(SCOPES)
    user = request.user
    if getattr(user, "is_authenticated", False) and hasattr(user, "has_perm"):
        return frozenset(s for s in SCOPES if user.has_perm(f"accounts.{scope_codename(s)}"))
    return frozenset()


def scopes_required(view, method: str) -> tuple[str, ...]:
    """The scopes a view asks of a method, any one of which will do: the view's
    `required_scopes`, a tuple, or a dict by method ("GET" also serves HEAD and
    OPTIONS). () asks none: the view's credential is not an API key (an agent's,
    a region's) or any signed-in caller may have the answer."""
    needed = view.required_scopes  # every API view declares it (tests/test_scopes.py)
    if isinstance(needed, dict):
        needed = needed.get("GET" if method in ("HEAD", "OPTIONS") else method, ())
    return needed


class HasScope(BasePermission):
    """The caller holds one of the scopes the view asks of the method (403 naming them otherwise)."""

    def has_permission(self, request, view) -> bool:
        needed = scopes_required(view, request.method)
        if not needed or scopes_of(request) & set(needed):
            return True
        self.message = f"This credential lacks the {' or '.join(needed)} scope."
        return False
