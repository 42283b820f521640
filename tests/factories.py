"""Small builders for tests that run in-process against the test database."""
from project.accounts.services import api_key_create
from regions.services.agents.registry import agent_register


def caller(username: str = "caller", staff: bool = False):
    key, raw = api_key_create(username=username, staff=staff)
    return key.user, raw


def agent(agent_id: str = "a1", capabilities=("echo",)):
    return agent_register(agent_id=agent_id, capabilities=list(capabilities))


def config(content: dict, sha: str = "c" * 40):
    """Make `content` the region's active configuration, as an applied sync would."""
    from regions.models import ConfigVersion
    from regions.services.config.current import config_current

    ConfigVersion.objects.filter(is_active=True).update(is_active=False)
    version = ConfigVersion.objects.create(sha=sha, result=ConfigVersion.Result.APPLIED, content=content,
                                           is_active=True)
    config_current.cache_clear()
    return version
