import pytest

from tests import harness


@pytest.fixture
def redis_clean():
    """The real Redis (test database 15), emptied around each test."""
    from regions.services import liveness

    liveness.client().flushdb()
    yield liveness.client()
    liveness.client().flushdb()


@pytest.fixture(scope="session")
def region_template():
    template = harness.Template()
    yield template
    template.drop()


@pytest.fixture(scope="module")
def region(region_template):
    """A real region shared by the tests of one module (agents are per test)."""
    r = harness.Region(region_template).start()
    yield r
    r.stop()


@pytest.fixture
def fresh_region(region_template):
    """A real region of its own, for tests that break things."""
    regions = []

    def make(**env) -> harness.Region:
        r = harness.Region(region_template, **env).start()
        regions.append(r)
        return r

    yield make
    for r in regions:
        r.stop()


@pytest.fixture
def agents(region):
    """Agents started by a test are stopped at its end."""
    started = []

    def start(*args, **kwargs):
        proc = region.agent(*args, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def router_template():
    template = harness.Template(role="router")
    yield template
    template.drop()


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """In-process tests share one process: start each with empty caches."""
    from project.accounts import authentication
    from regions.services.config import config_current
    from regions.services.handlers import _declared

    authentication._verified.clear()
    config_current.cache_clear()
    _declared.clear()
    try:
        from router.selectors import regions_directory_reset
    except Exception:  # router app not importable in this role
        return
    regions_directory_reset()


def pytest_terminal_summary(terminalreporter):
    """The fault matrix's figures, together, whatever -q or -s said."""
    from tests.accounting import RECORDED

    if RECORDED:
        terminalreporter.section("fault matrix figures")
        for line in RECORDED:
            terminalreporter.write_line(line)
