"""Test settings: the real services (PostgreSQL, Redis), never SQLite."""
import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time


def _private_redis() -> str:
    """A redis-server of this test run's own: in-process tests empty their Redis
    around each test, which must never touch another run's (a developer's and
    CI's on one machine) nor the machine's shared Redis."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="meridian-unit-redis-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)  # runs after the line below: last in, first out
    atexit.register(proc.terminate)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/15"


os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/meridian")
# Each test process of an -n run has its own (they inherit the environment of the one that
# started them); a pytest this process starts (tests/test_storage_sqlite.py) shares its parent's.
# A REDIS_URL given from outside is used as given, a database of its own per test process (15, 14, ...).
_worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
if "REDIS_URL" not in os.environ or os.environ.get("MERIDIAN_UNIT_REDIS_OF", _worker) != _worker:
    os.environ["REDIS_URL"] = _private_redis()
    os.environ["MERIDIAN_UNIT_REDIS_OF"] = _worker
elif "MERIDIAN_UNIT_REDIS_OF" not in os.environ and _worker != "main":
    from urllib.parse import urlsplit, urlunsplit  # noqa: E402

    _given = urlsplit(os.environ["REDIS_URL"])
    os.environ["REDIS_URL"] = urlunsplit(_given._replace(path=f"/{15 - int(_worker.removeprefix('gw')) % 16}"))
    os.environ["MERIDIAN_UNIT_REDIS_OF"] = _worker
os.environ.setdefault("REGION_ID", "unit-1")
# A vhost of its own on the real RabbitMQ (bin/ensure-services creates it).
os.environ.setdefault("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/meridian-unit")
os.environ.setdefault("SECRET_KEY", "test-secret")
# In-process tests write heartbeats through; the batching buffer has its own tests
# and runs in every integration test's web server.
os.environ.setdefault("HEARTBEAT_FLUSH_SECONDS", "0")
# Both roles' apps in one test database, so router services test in-process too.
os.environ.setdefault("EXTRA_APPS", "regions,agents,router")

# One router key pair per run: in-process tests are the router and a region at once.
if "ROUTER_SIGNING_KEY" not in os.environ:
    from project.accounts.assertions import keypair_generate  # noqa: E402

    os.environ["ROUTER_SIGNING_KEY"], os.environ["ROUTER_PUBLIC_KEYS"] = keypair_generate()

from project.settings import *  # noqa: E402,F401,F403

# One test database per run, so two runs on one machine (a developer's and CI's) never collide
# (SQLite, for the demo's storage paths: tests/test_storage_sqlite.py, in memory).
if DATABASES["default"]["ENGINE"].endswith("postgresql"):  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": f"test_meridian_{os.getpid()}"}  # noqa: F405

# In-process tests render pages without running collectstatic (the harness's real
# servers serve the hashed, compressed files: tests/test_static_files.py).
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
WHITENOISE_AUTOREFRESH = True  # nothing collected: look files up per request, no warning about STATIC_ROOT
