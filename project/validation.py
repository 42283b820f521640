"""Name formats and input shapes shared by both roles."""
from rest_framework import serializers

CAPABILITY_RE = r"^[a-z][a-z0-9_]{0,63}$"
AGENT_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
LABEL_RE = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class AgentIdentitySerializer(serializers.Serializer):
    """What both roles take from a registering agent: its id and capabilities."""

    agent_id = serializers.RegexField(AGENT_ID_RE)
    capabilities = serializers.ListField(child=serializers.RegexField(CAPABILITY_RE), min_length=1, max_length=200)
