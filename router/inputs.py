"""What the router accepts from regions and callers, every field bounded.

The parsers here are pure (no database): any JSON value gives either data
within these bounds or a ValidationError naming the field. The readers in
router/selectors.py hold rows already stored to the same bounds.
"""
from __future__ import annotations

import math
import re
import time
from datetime import datetime, timezone as dt_timezone
from typing import Any

from django.conf import settings
from rest_framework import serializers

from project.region_summary import (ATTENTION_SEVERITIES, MAX_ATTENTION_COUNT, MAX_ATTENTION_ITEMS,
                                    MAX_ATTENTION_KIND, MAX_ATTENTION_PATH, MAX_ATTENTION_TEXT, MAX_CAPABILITIES,
                                    attention_path_ok)
from project.validation import (CAPABILITY_RE, LABEL_RE, BatchItemsField, StrictCharField, StrictRegexField,
                                StrictSlugField)

SCHEMA_VERSION = 1
# Per region: agents in all, and agents serving one capability.
MAX_AGENTS = 1_000_000
MIN_SUMMARY_INTERVAL = 1.0
MAX_SUMMARY_INTERVAL = 86_400.0
DEFAULT_SUMMARY_INTERVAL = 60.0
MAX_LABELS = 32
MAX_URL_LENGTH = 200  # Region.orchestrator_url
MAX_CONFIG_VERSION_LENGTH = 64  # a git commit id, SHA-1 or SHA-256
MAX_CONFIG_SUBJECT_LENGTH = 200  # Region.config_subject
DEFAULT_MAX_SKEW_SECONDS = 300.0

capability_name = re.compile(CAPABILITY_RE).fullmatch  # whole: "$" alone lets a trailing newline in
label_name = re.compile(LABEL_RE).fullmatch
REGION_ID_RE = r"^[-a-zA-Z0-9_]{1,64}\Z"  # Region.region_id, as the operator may set it
# Not Django's URLValidator: it refuses single-label hosts (http://us-east-1:8000,
# a compose service). A summary's URL must equal the registered one anyway.
orchestrator_url = re.compile(r"https?://[^\s/?#]+(/[^\s]*)?").fullmatch

_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}


def max_skew_seconds() -> float:
    """How far ahead of the router's clock a summary may be dated."""
    value = float(getattr(settings, "ROUTER_SUMMARY_MAX_SKEW_SECONDS", DEFAULT_MAX_SKEW_SECONDS))
    return value if math.isfinite(value) and value >= 0 else DEFAULT_MAX_SKEW_SECONDS


def _require_object(body: Any, what: str) -> None:
    if not isinstance(body, dict):
        kind = _JSON_TYPES.get(type(body), type(body).__name__)
        raise serializers.ValidationError({"non_field_errors": [f"{what} must be a JSON object, not {kind}."]})


class StrictFloatField(serializers.FloatField):
    """A finite number; DRF would read true as 1.0."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class CapabilityCountsSerializer(serializers.Serializer):
    count = serializers.IntegerField(min_value=0, max_value=MAX_AGENTS)
    idle = serializers.IntegerField(min_value=0, max_value=MAX_AGENTS)

    def validate(self, attrs):
        if attrs["idle"] > attrs["count"]:
            raise serializers.ValidationError({"idle": ["idle is larger than count"]})
        return attrs


class CapabilitiesField(serializers.DictField):
    """{capability: {count, idle}}: at most MAX_CAPABILITIES names, each a whole capability name."""

    child = CapabilityCountsSerializer()

    def to_internal_value(self, data):
        if isinstance(data, dict):
            if len(data) > MAX_CAPABILITIES:
                raise serializers.ValidationError(f"at most {MAX_CAPABILITIES} capabilities, not {len(data)}")
            bad = next((name for name in data if not capability_name(name)), None)
            if bad is not None:
                raise serializers.ValidationError(f"invalid capability name {ascii(bad)[:80]}")
            plain = _plain_counts(data)
            if plain is not None:
                return plain
        return {name: dict(counts) for name, counts in super().to_internal_value(data).items()}


def _plain_counts(data: dict) -> dict | None:
    """The summary's capabilities when every entry is {"count": int, "idle": int}
    within the bounds, as every region sends them; None for anything else, which
    the serializer then validates entry by entry, naming the fault. The
    serializer costs ~50 µs an entry (10 ms for 200 capabilities, most of an
    ingest); this check gives the same result for well-formed input."""
    out = {}
    for name, entry in data.items():
        if type(entry) is not dict:
            return None
        count, idle = entry.get("count"), entry.get("idle")
        if type(count) is not int or type(idle) is not int or not (0 <= idle <= count <= MAX_AGENTS):
            return None
        out[name] = {"count": count, "idle": idle}
    return out


class AttentionItemSerializer(serializers.Serializer):
    """One of a region's "needs attention" items: what it is, how bad, one line, a count."""

    kind = StrictSlugField(max_length=MAX_ATTENTION_KIND)
    severity = serializers.ChoiceField(choices=ATTENTION_SEVERITIES)
    text = StrictCharField(max_length=MAX_ATTENTION_TEXT)
    count = serializers.IntegerField(min_value=0, max_value=MAX_ATTENTION_COUNT)
    path = StrictCharField(max_length=MAX_ATTENTION_PATH, required=False,
                           help_text="the list in the region's console that shows it (a path under /admin/)")

    def validate_path(self, value: str) -> str:
        if not attention_path_ok(value):
            raise serializers.ValidationError("a path under /admin/ (letters, digits and _./?=&%,:+- only)")
        return value

    def validate_text(self, value: str) -> str:
        if not value.isprintable():
            raise serializers.ValidationError("only printable characters")
        return value


class AttentionField(serializers.ListField):
    """At most MAX_ATTENTION_ITEMS items; null or absent (a region of an older release) is none."""

    child = AttentionItemSerializer()

    def __init__(self, **kwargs):
        super().__init__(max_length=MAX_ATTENTION_ITEMS, required=False, allow_null=True, default=list,
                         allow_empty=True, **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, list) and len(data) > MAX_ATTENTION_ITEMS:  # before validating each of them
            raise serializers.ValidationError(f"at most {MAX_ATTENTION_ITEMS} items, not {len(data)}")
        return [dict(item) for item in super().to_internal_value(data)]


class SummaryInputSerializer(serializers.Serializer):
    region_id = StrictSlugField(max_length=64)
    orchestrator_url = StrictCharField(max_length=MAX_URL_LENGTH)
    available_agents = serializers.IntegerField(min_value=0, max_value=MAX_AGENTS)
    agent_capabilities_summary = CapabilitiesField()
    last_updated = StrictFloatField(min_value=0, help_text="Unix time, the region's clock")
    config_version = StrictCharField(max_length=MAX_CONFIG_VERSION_LENGTH, required=False,
                                     allow_blank=True, allow_null=True, default="")
    # The commit's subject line; a region of an older release sends none.
    config_subject = StrictCharField(max_length=MAX_CONFIG_SUBJECT_LENGTH, required=False, allow_blank=True,
                                     allow_null=True, default="")
    schema_version = serializers.IntegerField(min_value=1, required=False, default=SCHEMA_VERSION)
    summary_interval = StrictFloatField(min_value=MIN_SUMMARY_INTERVAL, max_value=MAX_SUMMARY_INTERVAL,
                                        required=False)
    attention = AttentionField()

    def validate_last_updated(self, value: float) -> float:
        # A summary dated in the future would refuse every genuine one after it
        # (replays are refused by date) until that date passed.
        skew = max_skew_seconds()
        now = self.context.get("now") or time.time()
        if value > now + skew:
            try:
                when = datetime.fromtimestamp(value, tz=dt_timezone.utc).isoformat()
            except (OverflowError, ValueError, OSError):
                when = f"{value:g} (Unix time)"
            raise serializers.ValidationError(
                f"{when} is more than {skew:g} s ahead of the router's clock (ROUTER_SUMMARY_MAX_SKEW_SECONDS); "
                "check the region's clock")
        return value

    def validate_orchestrator_url(self, value: str) -> str:
        if not orchestrator_url(value):
            raise serializers.ValidationError("an http:// or https:// URL")
        return value

    def validate_config_version(self, value: str | None) -> str:
        if value and not value.isprintable():
            raise serializers.ValidationError("only printable characters")
        return value or ""

    def validate_config_subject(self, value: str | None) -> str:
        if value and not value.isprintable():
            raise serializers.ValidationError("only printable characters")
        return value or ""

    def validate_schema_version(self, value: int) -> int:
        if value > SCHEMA_VERSION:
            raise serializers.ValidationError(f"this router understands schema version {SCHEMA_VERSION} at most")
        return value


def summary_parse(body: Any, *, now: float | None = None) -> dict:
    """A region's summary, validated: any JSON value gives either a summary
    within the bounds above or a ValidationError naming the field."""
    _require_object(body, "A summary")
    data = SummaryInputSerializer(data=body, context={"now": now})
    data.is_valid(raise_exception=True)
    return dict(data.validated_data)


class TaskHeadSerializer(serializers.Serializer):
    """What the router reads of a task it forwards; the rest passes through unread."""

    capability = StrictRegexField(CAPABILITY_RE)
    residency = StrictRegexField(LABEL_RE, required=False, allow_null=True)
    region = StrictRegexField(REGION_ID_RE, required=False, allow_null=True, help_text=(
        "Forward to this region only: a retry after a 504 goes where the first try may have landed "
        "(idempotency keys are kept per region)."))


def task_forward_parse(body: Any) -> dict:
    """{"capability", "residency", "region"} of a task submission, or a ValidationError."""
    _require_object(body, "A task")
    data = TaskHeadSerializer(data=body)
    data.is_valid(raise_exception=True)
    return {"capability": data.validated_data["capability"], "residency": data.validated_data.get("residency"),
            "region": data.validated_data.get("region")}




class TaskBatchHeadSerializer(serializers.Serializer):
    """What the router reads of a batch it forwards: the items' capabilities and
    where the batch may go; the items pass through unread (the region checks them)."""

    tasks = BatchItemsField()
    residency = StrictRegexField(LABEL_RE, required=False, allow_null=True)
    region = StrictRegexField(REGION_ID_RE, required=False, allow_null=True)

    def validate_tasks(self, items: list) -> list:
        if not any(_item_capability(item) for item in items):
            raise serializers.ValidationError("no item names a valid capability: nothing to route by")
        return items


def _item_capability(item: Any) -> str | None:
    name = item.get("capability") if isinstance(item, dict) else None
    return name if isinstance(name, str) and capability_name(name) else None


def task_batch_forward_parse(body: Any) -> dict:
    """{"capabilities", "residency", "region"} of a batch, or a ValidationError.
    Items without a valid capability are left to the region, which refuses each
    of them in its answer as it would alone."""
    _require_object(body, "A batch")
    data = TaskBatchHeadSerializer(data=body)
    data.is_valid(raise_exception=True)
    capabilities = [name for name in map(_item_capability, data.validated_data["tasks"]) if name]
    return {"capabilities": list(dict.fromkeys(capabilities)), "residency": data.validated_data.get("residency"),
            "region": data.validated_data.get("region")}


def task_redirect_region(query: Any) -> str:
    """The `region` of a task request at the router (?region=<region_id>), or a ValidationError naming it."""
    values = query.getlist("region") if hasattr(query, "getlist") else [query.get("region")]
    value = values[-1] if values else None
    if not isinstance(value, str) or not value or len(values) > 1 or not re.match(REGION_ID_RE, value):
        raise serializers.ValidationError({"region": [
            "the region that owns the task is required: ?region=<region_id> (a task reference is "
            "<region_id>/<task id>)"]})
    return value
