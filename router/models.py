"""The router keeps region summaries and routing rules only: no agent records,
no task payloads, no results."""
from django.db import models

from project.accounts.models import HashedToken


class Region(models.Model):
    region_id = models.SlugField(max_length=64, unique=True)
    orchestrator_url = models.URLField()
    labels = models.JSONField(default=list, blank=True, help_text='residency and other labels, e.g. ["eu"]')
    # Indexed: every summary (8 a second at 500 regions) looks its region up by it.
    token_hash = models.CharField(max_length=64, db_index=True, help_text="SHA-256 of the region's summary token")
    enabled = models.BooleanField(default=True)
    # The operator's hold on what the region's own summaries claim (routing.py).
    capacity_ceiling = models.PositiveIntegerField(
        null=True, blank=True, help_text="the most agents (idle or not) this region's summaries are believed for; "
                                         "empty: ROUTER_REGION_CEILING")
    weight = models.FloatField(default=1.0, help_text="multiplies the region's idle capacity when ranking, 0 to 10 "
                                                      "(0: chosen only when no other region serves)")
    # The latest summary (article format), replaced as a whole on each push.
    summary_interval = models.FloatField(default=60.0)
    available_agents = models.PositiveIntegerField(default=0)
    capabilities = models.JSONField(default=dict, blank=True, help_text="{capability: {count, idle}}")
    last_updated = models.DateTimeField(null=True, blank=True, help_text="the region's clock")
    received_at = models.DateTimeField(null=True, blank=True, help_text="the router's clock")
    schema_version = models.PositiveSmallIntegerField(default=1)
    config_version = models.CharField(max_length=64, blank=True)
    config_subject = models.CharField(max_length=200, blank=True, help_text="the commit's subject line")
    config_since = models.DateTimeField(null=True, blank=True, help_text="first summary on this config")
    # What the region's own panel says needs attention (regions/attention.py), as its
    # latest summary carried it: [{kind, severity, text, count}], never task data.
    attention = models.JSONField(default=list, blank=True, help_text="the region's own 'needs attention' items")

    class Meta:
        ordering = ["region_id"]

    def __str__(self) -> str:
        return self.region_id


class RegistrationToken(HashedToken):
    """Presented by agents to POST /register_agent; optionally limited to regions."""

    regions = models.JSONField(default=list, blank=True, help_text="region ids; empty means all")


class AddressRule(models.Model):
    """Client addresses (CIDR) that belong to a region; lowest priority first."""

    cidr = models.CharField(max_length=64)
    region = models.ForeignKey(Region, on_delete=models.CASCADE, related_name="address_rules")
    priority = models.PositiveIntegerField(default=100)

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return f"{self.cidr} → {self.region_id}"


class ForwardOutcomes(models.Model):
    """How the router's forwards to a region went: lately (routing ranks by it)
    and in all (metrics). Outcomes only, one row per region, moved by one UPDATE
    per forward (router/services/outcomes.py): nothing of a task, its caller or
    its payload is kept here.

    `failed` and `answered` are counts that halve every quarter of
    ROUTER_FORWARD_PENALTY_WINDOW_SECONDS (each brought to `at` before it is
    added to); times are epoch seconds, so the decay is arithmetic any database
    does in the UPDATE itself."""

    region = models.OneToOneField(Region, on_delete=models.CASCADE, primary_key=True,
                                  related_name="forward_outcomes")
    failed = models.FloatField(default=0.0)
    answered = models.FloatField(default=0.0)
    at = models.FloatField(default=0.0, help_text="epoch seconds of the latest outcome")
    failed_at = models.FloatField(null=True, blank=True, help_text="epoch seconds of the latest failure")
    last_failure = models.CharField(max_length=16, blank=True, help_text="refused, unreachable, no_answer or error")
    answered_total = models.PositiveBigIntegerField(default=0)
    refused_total = models.PositiveBigIntegerField(default=0)
    unreachable_total = models.PositiveBigIntegerField(default=0)
    no_answer_total = models.PositiveBigIntegerField(default=0)
    error_total = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "forward outcomes"

    def __str__(self) -> str:
        return f"forward outcomes of {self.region_id}"
