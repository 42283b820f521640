"""Test settings: the real services (PostgreSQL, Redis), never SQLite."""
import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/meridian")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("REGION_ID", "unit-1")
# A vhost of its own on the real RabbitMQ (bin/ensure-services creates it).
os.environ.setdefault("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/meridian-unit")
os.environ.setdefault("SECRET_KEY", "test-secret")
# In-process tests write heartbeats through; the batching buffer has its own tests
# and runs in every integration test's web server.
os.environ.setdefault("HEARTBEAT_FLUSH_SECONDS", "0")
# Both roles' apps in one test database, so router services test in-process too.
os.environ.setdefault("EXTRA_APPS", "regions,agents,router")

from project.settings import *  # noqa: E402,F401,F403

# One test database per run, so two runs on one machine (a developer's and CI's) never collide.
DATABASES["default"]["TEST"] = {"NAME": f"test_meridian_{os.getpid()}"}  # noqa: F405
