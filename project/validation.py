"""Name formats and input shapes shared by both roles."""
from django.urls import register_converter
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

CAPABILITY_RE = r"^[a-z][a-z0-9_]{0,63}$"
# One grammar for an agent id, wherever one is read: the validators below and
# the `<agent_id:...>` URL converter. Dots are allowed: the default id of an
# agent may come from a fully qualified host name (host.example.com).
AGENT_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
AGENT_ID_RE = rf"\A{AGENT_ID_PATTERN}\Z"  # \Z, not $: "a1\n" is not an id
LABEL_RE = r"^[a-z0-9][a-z0-9_-]{0,31}$"
# The most submissions in one batch: the region's POST /api/v1/tasks/batch and
# the router's, which forwards a batch whole.
BATCH_MAX_ITEMS = 500


class AgentIdConverter:
    """`<agent_id:agent_id>` in a URL pattern: exactly the ids AGENT_ID_RE accepts."""

    regex = AGENT_ID_PATTERN

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(AgentIdConverter, "agent_id")


class _StringOnly:
    """Only a JSON string: DRF's CharField quietly turns a number into one (so
    `"agent_id": 0` registered an agent named "0", and `"task_id": false` read
    as the nil UUID)."""

    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class StrictCharField(_StringOnly, serializers.CharField):
    """Also untrimmed: the length checked is the length the schema documents
    (DRF's trimming let 51 characters starting with a separator pass max 50)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)


class StrictRegexField(_StringOnly, serializers.RegexField):
    pass


class StrictSlugField(_StringOnly, serializers.SlugField):
    pass


class StrictUUIDField(_StringOnly, serializers.UUIDField):
    pass


class StrictBooleanField(serializers.BooleanField):
    """Only JSON true or false: DRF's BooleanField also takes 0, 1, "yes", "off"...,
    which the schema (a boolean) does not document."""

    default_error_messages = {"not_a_boolean": "Must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("not_a_boolean")
        return data


@extend_schema_field({"type": "object", "additionalProperties": {}})
class JsonObjectField(serializers.JSONField):
    """A JSON object (a task's payload): documented as one, and nothing else taken."""

    default_error_messages = {"not_an_object": "Must be a JSON object."}

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("not_an_object")
        return super().to_internal_value(data)


class AgentIdentitySerializer(serializers.Serializer):
    """What both roles take from a registering agent: its id and capabilities."""

    agent_id = StrictRegexField(AGENT_ID_RE, trim_whitespace=False, error_messages={
        "invalid": "agent_id must be 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit."
    })
    capabilities = serializers.ListField(child=serializers.RegexField(CAPABILITY_RE), min_length=1, max_length=200)


class BatchItemsField(serializers.ListField):
    """The items of a batch, 1 to BATCH_MAX_ITEMS, each any JSON value (null too):
    an item that is not a submission is refused on its own, not the whole batch."""

    def __init__(self, **kwargs):
        super().__init__(child=serializers.JSONField(allow_null=True), min_length=1, max_length=BATCH_MAX_ITEMS,
                         **kwargs)
