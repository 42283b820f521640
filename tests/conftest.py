import sys
from pathlib import Path

# This checkout's client library, not whichever one the environment installed
# (an editable install may point at another worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "client"))

import pytest

from tests import harness

# The slow tiers (pytest.ini); `make test-fast` runs every test marked with none of them.
SLOW_TIERS = ("integration", "faults", "browser")
_running: list[pytest.Item] = []  # the test being set up, run or torn down


def _fast_tier_starts_no_process(what: str) -> None:
    """The fast tier's safety net: a test with no slow-tier marker that starts a
    real process through tests/harness.py or tests/faults.py fails, naming it."""
    if _running and not any(_running[0].get_closest_marker(tier) for tier in SLOW_TIERS):
        pytest.fail(f"{_running[0].nodeid} starts {what} but is not marked integration, faults or browser "
                    "(pytest.ini): mark it so that `make test-fast` leaves it out", pytrace=False)


harness.spawn_guard = _fast_tier_starts_no_process


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before any fixture of the test (a module's or the session's region included)."""
    _running[:] = [item]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    yield
    _running.clear()


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
    from regions.services.config.current import config_current
    from regions.services.handlers import _declared
    from regions.services.tasks import fair

    authentication._verified.clear()
    fair._slots_seen.clear()
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
