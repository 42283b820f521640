import pytest
from rest_framework.test import APIClient

from regions.services.tasks import dispatch
from tests import factories


@pytest.fixture
def api(redis_clean):
    """A caller's API client (its user as .user), with the real Redis emptied."""
    user, key = factories.caller()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    client.user = user
    return client


@pytest.fixture
def sent(monkeypatch):
    """The broker messages the task services send, kept here instead."""
    messages = []
    monkeypatch.setattr(dispatch.app, "send_task", lambda *a, **kw: messages.append(kw))
    return messages

