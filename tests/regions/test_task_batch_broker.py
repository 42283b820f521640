"""POST /api/v1/tasks/batch with a broker that accepts TCP and never answers (a
hung RabbitMQ, a black-holed path): the batch stops sending at the first
refusal and leaves the rest to the sweeper, so it costs one connection timeout,
not one per item (500 items would otherwise hold the request half an hour)."""

import pytest
from rest_framework.test import APIClient

from regions.models import Task
from regions.services.tasks import dispatch
from tests import factories
from tests.harness import silent_listener

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(redis_clean):
    _user, key = factories.caller()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def hung_broker(monkeypatch):
    with silent_listener() as quiet:
        url = f"amqp://guest:guest@127.0.0.1:{quiet.port}//"
        app = dispatch.app
        monkeypatch.setattr(app.conf, "broker_url", url)
        monkeypatch.setattr(app.conf, "broker_write_url", url)
        saved = app._pool, app.amqp._producer_pool
        app._pool, app.amqp._producer_pool = None, None
        yield quiet.held
        app._pool, app.amqp._producer_pool = saved


def test_a_hung_broker_costs_a_batch_one_timeout_not_one_per_item(api, hung_broker,
                                                                   django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        r = api.post("/api/v1/tasks/batch", {"tasks": [{"capability": "echo"}] * 5}, format="json")
    assert r.status_code == 200 and r.json()["accepted"] == 5
    assert Task.objects.filter(dispatched_at__isnull=True).count() == 5  # all left to the sweeper
    # connection attempts, not seconds: the first item's (and its one retry), none for the rest
    assert len(hung_broker) <= 2, f"{len(hung_broker)} connections for 5 items"
