"""The broker a region's processes (and its agents) use: what differs between
RabbitMQ and Redis, in one place.

RabbitMQ (``amqp://``) is the production default: native acknowledgements (a
dead consumer's unacked messages come back at once), publisher confirms,
durable queues with ``x-max-priority``. Redis (``redis://``) works too, with the
transport's emulated acknowledgements: see RELIABILITY.md for what it risks.

Both sides of a queue must declare it with the same arguments (RabbitMQ refuses
a redeclaration that differs), so agents call ``celery_options`` with the URL
their region handed them, not with whatever their environment says.
"""
from __future__ import annotations

# Environment variables Celery reads *before* its configuration: an agent must
# never let one of them override the broker of the region it joined.
BROKER_ENV_OVERRIDES = ("CELERY_BROKER_URL", "CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL")

MAX_PRIORITY = 9  # task priorities are 0 (lowest) .. 9 (highest)


def broker_kind(url: str) -> str:
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("amqp", "amqps", "pyamqp"):
        return "amqp"
    if scheme in ("redis", "rediss"):
        return "redis"
    raise ValueError(f"unsupported broker URL scheme {scheme!r}: use amqp:// (RabbitMQ) or redis://")


def celery_options(url: str) -> dict:
    """Celery settings (lower-case names) that depend on the broker."""
    if broker_kind(url) == "amqp":
        return {
            "broker_url": url,
            # A send returns only once the broker has the message (outbox: no
            # silent loss between "dispatched" and the queue).
            "broker_transport_options": {"confirm_publish": True},
            "task_queue_max_priority": MAX_PRIORITY,
            "task_default_priority": 5,
        }
    return {
        "broker_url": url,
        "broker_transport_options": {
            # Lists per priority band; band 0 is served first.
            "priority_steps": list(range(MAX_PRIORITY + 1)),
            "sep": ":",
            "queue_order_strategy": "priority",
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
            # A redelivery after this is harmless (the claim fence skips an
            # attempt already running), but it should not be routine.
            "visibility_timeout": 6 * 3600,
        },
        "task_queue_max_priority": None,
        "task_default_priority": None,
    }


def message_priority(url: str, priority: int) -> int:
    """Meridian's priority (9 = most urgent) as the broker understands it:
    RabbitMQ serves the highest number first, kombu's Redis bands the lowest."""
    return priority if broker_kind(url) == "amqp" else MAX_PRIORITY - priority
