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

from contextlib import contextmanager

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


class QueueRefused(Exception):
    """A passive declare refused: `code` 404 (no such queue), 405 (exclusive to
    another connection, which holds it); Redis: no such list (an empty queue)."""

    def __init__(self, code: int | None):
        super().__init__(f"queue declare refused ({code})")
        self.code = code


@contextmanager
def queue_inspector(url: str, *, timeout: float):
    """One short-lived connection for asking about queues without creating any:
    yields ask(name) -> (messages ready, consumers), raising QueueRefused when the
    broker refuses. One connection attempt, every read bounded by `timeout`; a
    refusal closes the channel, so the next ask opens another."""
    from kombu import Connection

    amqp = broker_kind(url) == "amqp"
    # The transport options Celery uses with this broker (Redis: one list per
    # priority band, named with its separator), with short timeouts.
    options = {**celery_options(url)["broker_transport_options"],
               **({"read_timeout": timeout, "write_timeout": timeout} if amqp
                  else {"socket_connect_timeout": timeout, "socket_timeout": timeout})}
    with Connection(url, connect_timeout=timeout, transport_options=options) as conn:
        conn.ensure_connection(max_retries=0)  # one attempt (connect() makes two): `timeout` bounds it
        channel = [conn.channel()]

        def ask(name: str) -> tuple[int, int]:
            try:
                _, messages, consumers = channel[0].queue_declare(queue=name, passive=True)
                return messages, consumers
            except conn.channel_errors as exc:
                channel[0] = conn.channel()
                raise QueueRefused(getattr(exc, "code", None)) from exc

        yield ask
