"""The schema of the configuration repository (global.yaml, regions/<id>.yaml).

Every key is optional in a file; the merged result is checked again, with the
rules that span keys (a TTL longer than two heartbeat intervals)."""
from project.validation import CAPABILITY_RE

SCHEMA_VERSION = 1
SECRET_REF_RE = r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:/[^\s]+)$"

TASK_DEFINITION = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "timeout": {"type": "integer", "minimum": 1, "maximum": 86400},
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 20},
        "retry_backoff": {"type": "number", "minimum": 0, "maximum": 3600},
        "rate_limit": {"type": "string", "pattern": r"^[1-9][0-9]*/(s|m|h)$"},
        # Whom rate_limit counts: the region as a whole, or each caller on its own.
        "rate_limit_per": {"enum": ["region", "caller"]},
        "regions": {"type": "array", "items": {"type": "string", "pattern": r"^(\*|[a-z0-9-]+)$"}},
        # Seconds a task may wait for an agent serving it before it fails (no_agent).
        "wait_deadline": {"type": "integer", "minimum": 1, "maximum": 2_592_000},
        # A JSON Schema every payload of the capability must meet (checked as one at sync).
        "payload_schema": {"type": "object"},
    },
}

# A schedule: a cron expression (in its time zone, UTC by default) or an interval
# in seconds, and the task each due time creates. Every key is checked per file;
# the merged schedule must name a capability and exactly one of cron or interval
# (config_parse, regions/services/schedules/due.py).
SCHEDULE_NAME_RE = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
SCHEDULE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "cron": {"type": "string", "minLength": 1, "maxLength": 200},
        "timezone": {"type": "string", "minLength": 1, "maxLength": 64},
        "interval": {"type": "integer", "minimum": 1, "maximum": 31_622_400},
        "capability": {"type": "string", "pattern": CAPABILITY_RE},
        "payload": {"type": "object"},
        "priority": {"type": "integer", "minimum": 0, "maximum": 9},
        # Where a schedule of global.yaml runs (default: every region).
        "regions": {"type": "array", "items": {"type": "string", "pattern": r"^(\*|[a-z0-9-]+)$"}},
        # While the previous run's task is still active: skip this run, run beside it,
        # or cancel it and run.
        "overlap": {"enum": ["skip", "allow", "replace"]},
        # A due time missed while the region was down: run the latest missed one, or none.
        "catch_up": {"enum": ["latest", "none"]},
    },
}

# A caller's quota at the region (0: no limit). callers.default applies to every
# caller without its own entry; a key missing from both takes the setting.
CALLER_QUOTA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "submissions_per_second": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
        "max_in_flight": {"type": "integer", "minimum": 0, "maximum": 100_000_000},
    },
}

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "agents": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "min_version": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+){0,2}$"},
                "heartbeat_interval": {"type": "number", "minimum": 0.2, "maximum": 600},
                "heartbeat_ttl": {"type": "number", "minimum": 0.5, "maximum": 3600},
                "heartbeat_budget": {"type": "number", "minimum": 0, "maximum": 1000000},
                "heartbeat_interval_max": {"type": "number", "minimum": 0.2, "maximum": 600},
            },
        },
        "summary_interval": {"type": "number", "minimum": 1, "maximum": 3600},
        "blocklist": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "agents": {"type": "array", "items": {"type": "string"}},
                "capabilities": {"type": "array", "items": {"type": "string", "pattern": CAPABILITY_RE}},
            },
        },
        "tasks": {
            "type": "object",
            "propertyNames": {"pattern": CAPABILITY_RE},
            "additionalProperties": TASK_DEFINITION,
        },
        "callers": {
            "type": "object",
            "propertyNames": {"pattern": r"^[\w.@+-]{1,150}$"},  # Django usernames
            "additionalProperties": CALLER_QUOTA,
        },
        "schedules": {
            "type": "object",
            "propertyNames": {"pattern": SCHEDULE_NAME_RE},
            "additionalProperties": SCHEDULE,
        },
        # Completion callbacks go only to these (regions/services/callbacks/guard.py):
        # a host name (any port), host:port, an address, or a CIDR. Empty: none.
        "callbacks": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "allowed_hosts": {"type": "array", "maxItems": 1000, "items": {
                    "type": "string", "maxLength": 300,
                    "pattern": r"^([A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?|[0-9A-Fa-f:.]+(/[0-9]{1,3})?)$",
                }},
            },
        },
        "secrets": {
            "type": "object",
            "propertyNames": {"pattern": r"^[a-z][a-z0-9_]{0,63}$"},
            # A secret is sent only to the hosts it is bound to (a payload names the
            # secret, but cannot send it anywhere else).
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["ref", "hosts"],
                "properties": {
                    "ref": {"type": "string", "pattern": SECRET_REF_RE},
                    "hosts": {"type": "array", "minItems": 1,
                              "items": {"type": "string", "pattern": r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$"}},
                },
            },
        },
    },
}

KEYS_SUPPORTED = [
    "schema_version", "agents.min_version", "agents.heartbeat_interval", "agents.heartbeat_ttl",
    "agents.heartbeat_budget (beats/s; 0: none)", "agents.heartbeat_interval_max",
    "summary_interval", "blocklist.agents", "blocklist.capabilities", "tasks.<capability>.timeout",
    "tasks.<capability>.max_attempts", "tasks.<capability>.retry_backoff", "tasks.<capability>.rate_limit",
    "tasks.<capability>.rate_limit_per (region or caller)",
    "tasks.<capability>.regions", "tasks.<capability>.wait_deadline (seconds)",
    "tasks.<capability>.payload_schema (a JSON Schema)",
    "callers.<username or default>.submissions_per_second (0: none)",
    "callers.<username or default>.max_in_flight (0: none)",
    "secrets.<name>.ref (env:NAME or file:/path)", "secrets.<name>.hosts",
    "schedules.<name>.cron", "schedules.<name>.timezone (IANA name; default UTC)",
    "schedules.<name>.interval (seconds)", "schedules.<name>.capability", "schedules.<name>.payload",
    "schedules.<name>.priority", "schedules.<name>.regions", "schedules.<name>.overlap (skip, allow or replace)",
    "schedules.<name>.catch_up (latest or none)",
    "callbacks.allowed_hosts (host, host:port, address or CIDR)",
]
