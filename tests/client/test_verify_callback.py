"""The receiver's side of a completion callback: meridian_client.verify_callback
accepts what the region signs and refuses forgeries, replays and stale
deliveries with a clear error. Pure logic: no server."""
import hashlib
import hmac
import json
import time

import pytest

from meridian_client import CallbackVerificationError, verify_callback

SECRET = "whsec_test_secret"
BODY = json.dumps({"id": "7b1c", "status": "succeeded", "result": {"ok": True}}).encode()


def header_for(body: bytes, secret: str = SECRET, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def test_accepts_a_signed_body_and_returns_the_task():
    assert verify_callback(BODY, header_for(BODY), SECRET) == {"id": "7b1c", "status": "succeeded",
                                                               "result": {"ok": True}}


def test_accepts_any_of_several_signatures_as_during_a_rotation():
    t = int(time.time())
    good = header_for(BODY, t=t).split(",")[1]
    assert verify_callback(BODY, f"t={t},v1={'0' * 64},{good}", SECRET)["id"] == "7b1c"


def test_refuses_a_body_changed_after_signing():
    with pytest.raises(CallbackVerificationError, match="signature"):
        verify_callback(BODY.replace(b"succeeded", b"failed"), header_for(BODY), SECRET)


def test_refuses_a_signature_made_with_another_secret():
    with pytest.raises(CallbackVerificationError, match="signature"):
        verify_callback(BODY, header_for(BODY, secret="whsec_other"), SECRET)


def test_refuses_a_replay_older_than_the_tolerance():
    with pytest.raises(CallbackVerificationError, match="tolerance"):
        verify_callback(BODY, header_for(BODY, t=int(time.time()) - 301), SECRET)
    assert verify_callback(BODY, header_for(BODY, t=int(time.time()) - 1000), SECRET, tolerance=2000)


def test_refuses_a_timestamp_from_the_future_beyond_the_tolerance():
    with pytest.raises(CallbackVerificationError, match="tolerance"):
        verify_callback(BODY, header_for(BODY, t=int(time.time()) + 3600), SECRET)


def test_a_retimed_signature_does_not_verify():
    """A replayer who moves t forward cannot re-sign: t is under the MAC."""
    old = header_for(BODY, t=int(time.time()) - 1000)
    forged = f"t={int(time.time())},{old.split(',')[1]}"
    with pytest.raises(CallbackVerificationError, match="signature"):
        verify_callback(BODY, forged, SECRET)


@pytest.mark.parametrize("header", ["", "garbage", "t=abc,v1=00", "v1=00", f"t={int(time.time())}", None],
                         ids=["empty", "garbage", "t-not-a-number", "no-t", "no-v1", "none"])
def test_refuses_a_missing_or_malformed_header(header):
    with pytest.raises(CallbackVerificationError, match="Meridian-Signature"):
        verify_callback(BODY, header, SECRET)


@pytest.mark.parametrize("signature", ["\u00e9" * 64, "\udcff", "0" * 10_000])
def test_a_forged_signature_of_any_characters_is_refused_not_an_error(signature):
    """A header is attacker's text (http.server decodes it as latin-1): a
    non-ASCII v1 must be refused like any forgery, not raise TypeError."""
    with pytest.raises(CallbackVerificationError, match="signature"):
        verify_callback(BODY, f"t={int(time.time())},v1={signature}", SECRET)


def test_refuses_a_body_that_is_not_a_json_object_even_if_signed():
    body = b"[1, 2]"
    with pytest.raises(CallbackVerificationError, match="JSON object"):
        verify_callback(body, header_for(body), SECRET)


def test_refuses_an_empty_secret():
    with pytest.raises(ValueError, match="secret"):
        verify_callback(BODY, header_for(BODY), "")


def test_submit_sends_the_callback_url_when_one_is_given():
    from meridian_client._core import Core

    core = Core("http://region.invalid", "mk_x")
    assert core.submission("echo", {}, callback_url="https://hooks.example.com/x")["callback_url"] == \
        "https://hooks.example.com/x"
    assert "callback_url" not in core.submission("echo", {})
