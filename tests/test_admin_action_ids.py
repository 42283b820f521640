"""An admin action posted with a selected id that is not an id of the list's
model (a forged or mangled post) is refused with a 400 naming it, on every
changelist of both roles (console/admin_site.py), never a 500: Django's
response_action filters pk__in with the raw ids, and an integer or UUID
primary key does not take "//evil.example"."""
import html
import re

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from regions.models import Agent, Task

pytestmark = pytest.mark.django_db

# (model, an action of its list): integer and UUID primary keys, both roles, Django's own.
LISTS = [
    ("regions_agent", "agent_drained"),
    ("regions_task", "cancel"),
    ("router_region", "rotate_token"),
    ("router_registrationtoken", "revoke"),
    ("accounts_apikey", "delete_selected"),
    ("auth_user", "delete_selected"),
]
BAD = ["//evil.example", "<script>x</script>", "\x00", ""]


@pytest.fixture
def superuser(client):
    client.force_login(get_user_model().objects.create_superuser("op", "op@example.com", "pw"))
    return client


def text(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode())))


@pytest.mark.parametrize("model, action", LISTS)
@pytest.mark.parametrize("bad, confirmed", [*((bad, False) for bad in BAD), ("//evil.example", True)])
def test_a_malformed_selected_id_is_a_400_naming_it(superuser, model, action, bad, confirmed):
    """The list's action form (index), or a confirmation page's (post=yes)."""
    post = {"action": action, "_selected_action": [bad], **({"post": "yes"} if confirmed else {"index": 0})}
    response = superuser.post(reverse(f"admin:{model}_changelist"), post)
    assert response.status_code == 400, (model, bad, response.status_code)
    assert "not an id" in text(response)
    assert repr(bad)[1:-1] in text(response) or bad == ""
    assert "<script>x" not in response.content.decode()


def test_good_ids_next_to_a_bad_one_are_left_alone(superuser):
    """One bad id refuses the whole post: nothing is half done."""
    agent = Agent.objects.create(agent_id="host-1.example.com", capabilities=["echo"])
    response = superuser.post(reverse("admin:regions_agent_changelist"),
                              {"action": "agent_cordoned", "_selected_action": [agent.pk, "//evil.example"],
                               "index": 0})
    assert response.status_code == 400
    agent.refresh_from_db()
    assert agent.desired == Agent.Desired.ACTIVE


@pytest.mark.parametrize("model, action, well_formed", [
    ("regions_task", "cancel", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
    ("regions_task", "cancel", "9" * 32),  # a UUID without its dashes
    ("regions_agent", "agent_drained", "12345"),
    ("regions_agent", "agent_drained", "9" * 40),  # out of any integer's range: no row (Django's own check)
])
def test_a_well_formed_id_of_no_row_is_not_refused(superuser, model, action, well_formed):
    response = superuser.post(reverse(f"admin:{model}_changelist"),
                              {"action": action, "_selected_action": [well_formed], "index": 0})
    assert response.status_code in (200, 302)
    assert Task.objects.count() == 0
