import pytest

from regions.services import liveness


@pytest.fixture
def redis_clean():
    """The real Redis (test database 15), emptied around each test."""
    liveness.client().flushdb()
    yield liveness.client()
    liveness.client().flushdb()
