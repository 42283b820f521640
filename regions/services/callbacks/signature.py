"""The completion callback's signature, as the region makes it; the receiver's
side is meridian_client.callbacks.verify_callback (a test holds the two to one
scheme): ``Meridian-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>." + body>``."""
from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Meridian-Signature"
DELIVERY_HEADER = "Meridian-Delivery"  # <task id>.<task attempt>: the same for every try of one event
ATTEMPT_HEADER = "Meridian-Delivery-Attempt"  # 1, 2, …
EVENT_HEADER = "Meridian-Event"
EVENT = "task.finished"


def callback_signature(*, body: bytes, secret: str, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"
