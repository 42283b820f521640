"""The completion callback's signature, as the region makes it; the receiver's
side is meridian_client.callbacks.verify_callback (a test holds the two to one
scheme): ``Meridian-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>." + body>``,
one v1 per secret in force (two while a rotated secret's grace lasts)."""
from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Meridian-Signature"
DELIVERY_HEADER = "Meridian-Delivery"  # <task id>.<task attempt>: the same for every try of one event
ATTEMPT_HEADER = "Meridian-Delivery-Attempt"  # 1, 2, …
EVENT_HEADER = "Meridian-Event"
EVENT = "task.finished"


def callback_signature(*, body: bytes, secret: str, timestamp: int, previous: str = "") -> str:
    macs = [hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
            for key in (secret, previous) if key]
    return f"t={timestamp}," + ",".join(f"v1={mac}" for mac in macs)
