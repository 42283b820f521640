from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

# What an API key may do (project/accounts/scopes.py); one Django permission each
# (accounts.<scope with _ for :>) gives a signed-in person the same on the API.
SCOPES = {
    "tasks:submit": "submit tasks, and cancel or retry its own",
    "tasks:read": "read its own tasks and wait for them",
    "tasks:read_all": "read every caller's tasks, payloads and results included",
    "tasks:operate": "cancel and retry every caller's tasks (the answer shows the task, payload included)",
    "fleet:read": "read agents, the region's status and metrics, the router's regions and drift",
    "fleet:operate": "drain, cordon, uncordon and revoke agents",
}
CALLER_SCOPES = ("tasks:submit", "tasks:read")  # a key's scopes unless others are chosen


def scope_codename(scope: str) -> str:
    return scope.replace(":", "_")


def caller_scopes() -> list[str]:
    return list(CALLER_SCOPES)


def scopes_validate(value) -> None:
    """A list of known scope names, nothing else (a dict's keys or a string must not pass for scopes)."""
    if not isinstance(value, list) or not all(isinstance(s, str) and s in SCOPES for s in value):
        raise ValidationError(f"scopes: a list of scope names from {', '.join(SCOPES)}")


class ApiKey(models.Model):
    """A caller's credential; only the digest is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="First characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=caller_scopes, validators=[scopes_validate], help_text="What the key may do: " + "; ".join(
        f"{scope}: {what}" for scope, what in SCOPES.items()) + ".")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        permissions = [(scope_codename(scope), f"API {scope}: {what}") for scope, what in SCOPES.items()]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class HashedToken(models.Model):
    """A bearer token known only by its digest (registration tokens of both roles),
    bounded by a number of uses and an expiry chosen when it is made
    (project/accounts/registration.py spends and checks them)."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    max_uses = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)],
                                           help_text="registrations it may make; empty means unlimited")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="refused from then on; empty means never")
    uses = models.PositiveIntegerField(default=0, help_text="registrations made with it (counted, not editable)")
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class AuditEvent(models.Model):
    """A state change made by a person, a key or an operator's command: who, what,
    on what, when, from where, and how it ended. Written by project.accounts.audit
    only; read-only everywhere else."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=200, help_text='"user <name>", "key <prefix>… of <name>", "command <name>" '
                                                         'or "config sync"')
    action = models.CharField(max_length=64, db_index=True, help_text="e.g. agent.drain, task.retry, token.create")
    target = models.CharField(max_length=200, blank=True, db_index=True)
    address = models.GenericIPAddressField(null=True, blank=True, help_text="the request's client address")
    outcome = models.CharField(max_length=16, db_index=True, help_text="done, refused (4xx) or failed")
    detail = models.TextField(blank=True, help_text="why it was refused, or what changed")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["actor", "-at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target} {self.outcome}"


class SpentTicket(models.Model):
    """The ticket of a form that made a credential shown once (console/shown_once.py):
    unique, so a second post of the same form (a refresh, a double click) makes nothing."""

    ticket = models.CharField(max_length=64, unique=True)
    at = models.DateTimeField(auto_now_add=True)
