"""The router's region list fits the screen: a long orchestrator URL or a
long run of labels wraps inside its column instead of widening the page."""
import re

import pytest

from router.services.regions import region_create

pytestmark = pytest.mark.django_db


def test_a_long_orchestrator_url_and_labels_wrap_in_the_region_list(admin_client):
    host = "orchestrator-" + "a" * 50 + ".eu-west-3.internal.example.com"
    region_create(region_id="eu-west-3", orchestrator_url=f"https://{host}:8443",
                  labels=[f"label-{i}" for i in range(12)])
    page = admin_client.get("/admin/router/region/").content.decode()
    for field in ("orchestrator", "label_list"):
        cell = re.search(rf'<td class="field-{field}">(.*?)</td>', page, re.S).group(1)
        assert "overflow-wrap:anywhere" in cell and "white-space:normal" in cell, (field, cell[:300])
