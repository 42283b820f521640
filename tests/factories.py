"""Small builders for tests that run in-process against the test database."""
from project.accounts.services import api_key_create
from regions.services.agents.registry import agent_register


def caller(username: str = "caller", staff: bool = False):
    key, raw = api_key_create(username=username, staff=staff)
    return key.user, raw


def agent(agent_id: str = "a1", capabilities=("echo",)):
    return agent_register(agent_id=agent_id, capabilities=list(capabilities))
