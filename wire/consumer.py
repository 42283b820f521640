"""What every Meridian worker (agents and the orchestrator) does with a message
it cannot take: record it as a dead letter, ack it, keep consuming.

Two layers:
- `bounded_json_loads` replaces kombu's JSON decoder: a body over
  MESSAGE_MAX_BYTES, nested deeper than the bound, or carrying NaN/Infinity is
  a DecodeError before any Python object graph exists. A message nested ~900
  deep used to decode fine and then kill the worker's parent process while it
  pickled the message for its pool (RecursionError), again on every restart.
- `Consumer` (the `worker_consumer` setting) records what Celery itself drops
  (undecodable, unknown task, invalid task) and guards the receive path: any
  exception a single message raises there is recorded and the message acked,
  where it would otherwise end the worker ("Unrecoverable error").
"""
from __future__ import annotations

import logging
import struct
import threading

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.exceptions import DecodeError
from kombu.serialization import register
from kombu.utils.json import dumps as kombu_dumps

from project.jsonsafe import MAX_DEPTH, JsonRejected, json_loads_bounded
from wire import deadletter

logger = logging.getLogger(__name__)

# A Celery message body is [args, kwargs, embed]: a report's result sits four
# levels below the top.
MESSAGE_MAX_DEPTH = MAX_DEPTH + 8


def message_max_bytes() -> int:
    from django.conf import settings

    return settings.BROKER_MESSAGE_MAX_BYTES


def bounded_json_loads(data):
    try:
        return json_loads_bounded(data, max_bytes=message_max_bytes(), max_depth=MESSAGE_MAX_DEPTH)
    except JsonRejected as exc:
        raise DecodeError(str(exc)) from None


def install_bounded_json() -> None:
    """Both sides keep JSON on the wire; only decoding is bounded."""
    register("json", kombu_dumps, bounded_json_loads, content_type="application/json", content_encoding="utf-8")
    _refuse_compressed_bodies()
    _bound_amqp_header_tables()


def _refuse_compressed_bodies() -> None:
    """Meridian never compresses a message. kombu would inflate any body whose
    `compression` header names zlib, bz2, lzma or brotli before anything can
    check its size: 793 bytes of bz2 became 1 GiB in the consumer. With no
    decoder registered, such a message is a decode error: a dead letter."""
    from kombu import compression

    compression._decoders.clear()


HEADER_MAX_DEPTH = 16
TOO_DEEP = "<nested too deep>"
_header_depth = threading.local()


def _bound_amqp_header_tables() -> None:
    """py-amqp reads header tables recursively, in the connection's frame reader,
    before any message exists: a header nested ~3,000 deep raised RecursionError
    there and ended the worker, again on every restart (the message stays
    unacked). Tables and arrays deeper than HEADER_MAX_DEPTH are skipped by their
    length prefix and read as TOO_DEEP; the message then goes the usual way."""
    from amqp import serialization

    if getattr(serialization._read_item, "meridian_bounded", False):
        return
    read_item = serialization._read_item

    def bounded_read_item(buf, offset):
        depth = getattr(_header_depth, "n", 0)
        if depth >= HEADER_MAX_DEPTH and chr(buf[offset]) in "FA":
            length, = struct.unpack_from(">I", buf, offset + 1)
            return TOO_DEEP, offset + 5 + length
        _header_depth.n = depth + 1
        try:
            return read_item(buf, offset)  # its own nested reads come back through here
        finally:
            _header_depth.n = depth

    bounded_read_item.meridian_bounded = True
    serialization._read_item = bounded_read_item


def _where(message) -> tuple[str, str, str]:
    info = getattr(message, "delivery_info", None) or {}
    headers = getattr(message, "headers", None) or {}
    queue = info.get("routing_key") or info.get("exchange") or "?"
    return str(queue), str(headers.get("task", "")), str(headers.get("id", ""))


def _record(message, reason: str) -> None:
    queue, task, task_id = _where(message)
    deadletter.record(queue=queue, reason=reason, task_name=task, task_id=task_id,
                      body=getattr(message, "body", b""))


class Consumer(CeleryConsumer):
    def on_decode_error(self, message, exc):
        _record(message, f"cannot decode ({message.content_type}): {exc}")
        try:
            message.ack()
        except Exception:  # noqa: BLE001 - the channel may be gone; the broker redelivers
            logger.warning("could not ack an undecodable message", exc_info=True)

    def on_unknown_message(self, body, message):
        _record(message, "not a task message (no task name in its headers)")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body, message, exc):
        _record(message, f"unknown task {exc}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body, message, exc):
        _record(message, f"invalid task message: {exc}")
        super().on_invalid_task(body, message, exc)

    def create_task_handler(self, *args, **kwargs):
        handle = super().create_task_handler(*args, **kwargs)
        connection_errors = self.connection_errors

        def on_task_received(message):
            try:
                return handle(message)
            except connection_errors:
                raise  # the consumer reconnects: the message comes back
            except Exception as exc:  # noqa: BLE001 - one message never ends the worker
                _record(message, f"{type(exc).__name__} while receiving: {str(exc)[:300]}")
                try:
                    message.ack()
                except Exception:  # noqa: BLE001
                    logger.warning("could not ack a message that failed on receipt", exc_info=True)

        return on_task_received
