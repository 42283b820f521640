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


# `make test` runs two test processes side by side (pytest-xdist, --dist loadgroup). The modules
# with a fault scenario (whose bounds are timings) run one after another in one of them, from the
# start; every other module runs whole in either. Either way a module runs whole in one process, so
# its module fixtures (a region, the demo) start once.
FAULTS_GROUP = "faults"


def _module(item) -> str:
    return item.nodeid.split("::")[0]


@pytest.hookimpl(hookwrapper=True)
def pytest_collection_modifyitems(config, items):
    with_faults = {_module(item) for item in items if item.get_closest_marker("faults")}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(FAULTS_GROUP if _module(item) in with_faults else _module(item)))
    yield
    items.sort(key=lambda item: _module(item) not in with_faults)  # stable: each module's tests keep their order


def pytest_sessionfinish(session):
    """A test process of an -n run hands its fault figures to the one that prints the summary."""
    if hasattr(session.config, "workeroutput"):
        from tests.accounting import RECORDED

        session.config.workeroutput["fault_figures"] = list(RECORDED)


class _FaultFiguresFromWorkers:
    @staticmethod
    def pytest_testnodedown(node, error):
        from tests.accounting import RECORDED

        RECORDED.extend(getattr(node, "workeroutput", {}).get("fault_figures", []))


def pytest_configure(config):
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_FaultFiguresFromWorkers())


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


@pytest.fixture(scope="session", autouse=True)
def _urlconf_of_the_test_settings():
    """project.urls picks the role's API when it is imported: here, under the test
    settings' role (a region), never first inside a test that sets settings.ROLE to
    "router" (its region API would then be missing for the rest of the process:
    the live server's /api/v1/... answered 404 in whichever test came next)."""
    import project.urls  # noqa: F401


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


class Receiver:
    """A real HTTP receiver of completion callbacks on 127.0.0.1 (a threaded
    http.server): it records every request and answers with what `answers`
    holds next (status, headers), the last one repeated."""

    def __init__(self, answers=((200, {}),), delay: float = 0.0):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict] = []
        self.answers = list(answers)
        self.delay = delay
        self.in_flight = self.most_in_flight = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                import time

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    receiver.in_flight += 1
                    receiver.most_in_flight = max(receiver.most_in_flight, receiver.in_flight)
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                              "at": time.monotonic()})
                    status, headers = receiver.answers.pop(0) if len(receiver.answers) > 1 else receiver.answers[0]
                if receiver.delay:
                    time.sleep(receiver.delay)  # the receiver is slow, not the test: widens a race
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                with lock:
                    receiver.in_flight -= 1

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    """receiver(answers=..., delay=...) starts one; all are stopped at the end."""
    started = []

    def start(*args, **kwargs) -> Receiver:
        started.append(Receiver(*args, **kwargs))
        return started[-1]

    yield start
    for r in started:
        r.stop()
