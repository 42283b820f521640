"""Settings for both roles, read from the environment (django-environ).

ROLE=region runs a regional orchestrator (REGION_ID names it); ROLE=router runs
the Global Task Router. Defaults are for local use only: SQLite and Redis on
localhost. The real deployment sets DATABASE_URL to PostgreSQL.
"""
import math
import sys
from datetime import timedelta
from pathlib import Path

import environ

from project.logging import logging_config
from wire.broker import celery_options as broker_celery_options
from wire.protocol import CONTROL_QUEUE, MAX_ATTEMPT, REPORT_ALLOWANCE_SECONDS

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False) if (BASE_DIR / ".env").exists() else None

ROLE = env.str("ROLE", default="region")
if ROLE not in ("region", "router"):
    raise environ.ImproperlyConfigured(f"ROLE must be 'region' or 'router', not {ROLE!r}")
REGION_ID = env.str("REGION_ID", default="local-1")
# The URL agents and callers use to reach this orchestrator.
REGION_URL = env.str("REGION_URL", default="http://127.0.0.1:8000")

# Local state of this process: SQLite files (demo), beat schedule, config checkout.
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))

SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-secret-change-me")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

INSTALLED_APPS = [
    "console.apps.MeridianAdminConfig",  # django.contrib.admin, its home the fleet overview
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, vendored (project.schema.DocsAssetView)
    "project.accounts",
    # Both roles' console: the overview, its charts, `manage.py fleet_status`, one wording.
    "console.apps.ConsoleConfig",
]
# Each role installs only its own apps: the router's database has no task table.
ROLE_APPS = {"region": ["regions", "agents"], "router": ["router"]}
INSTALLED_APPS += env.list("EXTRA_APPS", default=ROLE_APPS[ROLE])

MIDDLEWARE = [
    "project.middleware.ApiErrorMiddleware",
    "project.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files from the web process itself, compressed and hashed (collectstatic).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: answers a locked-out login with 429.
    "axes.middleware.AxesMiddleware",
]

# The admin login is throttled: AXES_FAILURE_LIMIT wrong passwords for one user
# from one address lock that pair out for AXES_COOLOFF_MINUTES (429, the right
# password included); a successful login before that resets the count. Failures
# are counted in the database, so every web process of the role sees them.
# API keys and agent tokens never pass through here (random, hashed, not guessable).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_SENSITIVE_PARAMETERS = ["username"]  # a password typed as a username stays out of the log; the address not

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db(
        "DATABASE_URL", default=f"sqlite:///{VAR_DIR / f'{ROLE}-{REGION_ID}.sqlite3'}"
    )
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The embedded demo: several processes share each file. WAL lets readers and a
    # writer overlap; IMMEDIATE takes the write lock up front (no upgrade deadlocks).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30, "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # The same backend, with the health check skipped for a connection used
    # successfully within the last second (project/dbbackends/postgresql).
    DATABASES["default"]["ENGINE"] = "project.dbbackends.postgresql"
    # Each process names itself (pg_stat_activity shows who holds what), and a
    # process frozen inside a transaction (a paused VM, SIGSTOP, a debugger) has
    # it ended by the server after DB_IDLE_IN_TRANSACTION_SECONDS, so the row
    # locks it held come back: a web request waiting for one of them (an agent
    # registering again) would otherwise wait as long as the freeze lasts. Well
    # above any wait the code does inside a transaction (Redis and broker calls
    # time out in seconds); 0 turns it off.
    _command = sys.argv[1] if Path(sys.argv[0]).name == "manage.py" and len(sys.argv) > 1 else Path(sys.argv[0]).name
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options.setdefault("application_name", f"meridian {ROLE} {REGION_ID} {_command}"[:63])
    _idle = env.int("DB_IDLE_IN_TRANSACTION_SECONDS", default=60)
    _options["options"] = f"{_options.get('options', '')} -c idle_in_transaction_session_timeout={_idle * 1000}".strip()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
FORMAT_MODULE_PATH = "project.formats"  # times with seconds (Y-m-d H:i:s) in both roles' admin
STATIC_URL = "static/"
# Filled by `manage.py collectstatic` wherever the web is served (Dockerfile, compose,
# systemd, the demo, the test harness); WhiteNoise serves it with hashed names
# (cached for a year) and gzip/brotli variants made at collect time.
STATIC_ROOT = env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
STATICFILES_FINDERS = ["django.contrib.staticfiles.finders.FileSystemFinder", "project.staticfiles.AppDirectoriesFinder"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "project.accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Every view names the scopes it asks of an API key (project/accounts/scopes.py).
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated",
                                   "project.accounts.scopes.HasScope"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["project.parsers.SafeJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "project.exceptions.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    # No OPTIONS answers: DRF's would describe a view (its fields, to anyone where
    # the view checks its own token). The schema, behind a credential, does that.
    "DEFAULT_METADATA_CLASS": None,
}
# Bearer token a Prometheus scraper presents at /metrics (an API key with the fleet:read scope works too).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# What /metrics reads at scrape time, per role: the role's app's collector (project/metrics.py).
METRICS_COLLECTORS = {"region": "regions.metrics.RegionCollector", "router": "router.metrics.RouterCollector"}
# A web process re-checks a verified API key after this long (revocation delay).
API_KEY_CACHE_SECONDS = env.float("API_KEY_CACHE_SECONDS", default=5.0)
SPECTACULAR_SETTINGS = {
    "TITLE": "Meridian API",
    "DESCRIPTION": "Regional orchestrator and Global Task Router. Every operation but /healthz needs a "
                   "credential; the security of each operation names which one.",
    "VERSION": "1.0.0",
    # The schema and the docs need a credential like every other API (an API key, or
    # an admin session in a browser): in a multi-tenant deployment an anonymous
    # caller learns nothing but /healthz. See project/schema.py.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "project.schema.postprocess"],
    # Swagger UI's files come from this process (project.schema.DocsAssetView), never a CDN.
    "SWAGGER_UI_DIST": "/api/docs/assets",
    "SWAGGER_UI_FAVICON_HREF": "/api/docs/assets/favicon-32x32.png",
    # Operation ids and tags are named below this prefix (a region's API lives under
    # /api/; found by itself it would be "/" once /metrics, a DRF view, is counted,
    # and every operation id would change). The router's paths start at "/".
    "SCHEMA_PATH_PREFIX": "/api/" if ROLE == "region" else None,
}

# Redis holding liveness state (heartbeats never touch PostgreSQL).
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=2.0)

# --- Celery -----------------------------------------------------------------
# RabbitMQ by default (a vhost per region isolates regions); redis:// also works.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="amqp://guest:guest@127.0.0.1:5672//")
# The URL handed to agents at registration (the one they can reach).
AGENT_BROKER_URL = env.str("AGENT_BROKER_URL", default=CELERY_BROKER_URL)
_broker = broker_celery_options(CELERY_BROKER_URL)
CELERY_BROKER_TRANSPORT_OPTIONS = _broker["broker_transport_options"]
CELERY_TASK_QUEUE_MAX_PRIORITY = _broker["task_queue_max_priority"]
CELERY_TASK_DEFAULT_PRIORITY = _broker["task_default_priority"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Workers never give up on their broker: they wait for it to come back.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_CONNECTION_TIMEOUT = 4
CELERY_TASK_DEFAULT_QUEUE = CONTROL_QUEUE
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Records what it cannot take as a dead letter and never ends on one message.
CELERY_WORKER_CONSUMER = "wire.consumer:Consumer"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_SEND_TASK_EVENTS = False
# Agents send Celery's task events (task-received/started/succeeded/failed) for
# Flower and `celery events` (docs/flower.md). Off by default: three broker
# messages per task cost 6-16% of throughput on Redis, up to 10% on RabbitMQ
# (BENCHMARKS.md, "Task events"). Their worker-heartbeat events are always
# on, so Flower sees them online and turns task events on in running agents by
# itself (as does `celery control enable_events`); `make demo` starts agents
# with them on.
AGENT_TASK_EVENTS = env.bool("AGENT_TASK_EVENTS", default=False)
CELERY_TASK_ACKS_LATE = True
# A message whose worker process died is acked, not requeued: a message that
# kills its consumer must not loop. The agent reports the lost attempt to its
# region (agents.runtime), which retries it as a new attempt.
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_BROKER_POOL_LIMIT = env.int("CELERY_BROKER_POOL_LIMIT", default=10)

# --- Region behaviour (seconds) ---------------------------------------------
HEARTBEAT_INTERVAL = env.float("HEARTBEAT_INTERVAL", default=5.0)
HEARTBEAT_TTL = env.float("HEARTBEAT_TTL", default=15.0)
# Bounded chatter (regions.services.config.current.EffectiveConfig.heartbeat_timing): the
# interval handed to agents grows with the fleet so that it beats at most this
# many times a second in total (0: no budget), up to HEARTBEAT_INTERVAL_MAX; the
# TTL grows in proportion. Overridable per region (agents.heartbeat_budget,
# agents.heartbeat_interval_max).
HEARTBEAT_BUDGET_PER_SECOND = env.float("HEARTBEAT_BUDGET_PER_SECOND", default=4000.0)
HEARTBEAT_INTERVAL_MAX = env.float("HEARTBEAT_INTERVAL_MAX", default=60.0)
# The web closes a kept-alive connection idle for this long (project/gunicorn_conf.py).
# Longer than the longest interval handed to agents (the bounded-chatter cap
# above): when it equalled the interval (5 s), an agent reused its connection
# just as the web closed it and about 1 beat in 55 was lost to a reset. The 5 s
# margin covers what an agent does between a reply and its next wait (the
# outbox, the desired state) on a busy machine. A configuration repository that
# raises agents.heartbeat_interval_max above this costs a handshake per beat,
# not a lost beat (a connection closed well before it is reused is seen closed
# and replaced); raise HEARTBEAT_INTERVAL_MAX in the web's environment with it.
# Each kept connection holds an open file in a web worker (docs/architecture.md).
WEB_KEEPALIVE_SECONDS = math.ceil(max(HEARTBEAT_INTERVAL, HEARTBEAT_INTERVAL_MAX)) + 5
# Web processes batch heartbeats into Redis this often; 0 writes each one through.
HEARTBEAT_FLUSH_SECONDS = env.float("HEARTBEAT_FLUSH_SECONDS", default=0.2)
REAPER_INTERVAL = env.float("REAPER_INTERVAL", default=5.0)
# Open overviews fetch themselves this often (console/static/console/live.js; at least 2 s).
OVERVIEW_REFRESH_SECONDS = env.int("OVERVIEW_REFRESH_SECONDS", default=10)
# The clock lease (regions/services/leadership.py): of the orchestrators started
# with --beat, the holder runs the clock jobs and renews this often; a standby
# takes over at most LEASE + RENEW seconds after the holder stops renewing (one
# LEASE more if a frozen process left a clock-job transaction open: the server
# ends such a transaction after LEASE idle seconds, and a takeover waits for it).
ORCHESTRATOR_LEASE_SECONDS = env.float("ORCHESTRATOR_LEASE_SECONDS", default=5.0)
ORCHESTRATOR_LEASE_RENEW_SECONDS = env.float("ORCHESTRATOR_LEASE_RENEW_SECONDS", default=1.0)
# The reaper evicts only while the region's web (where heartbeats arrive) answers
# here; empty disables the check.
REAPER_WEB_CHECK_URL = env.str("REAPER_WEB_CHECK_URL", default=f"{REGION_URL}/healthz")
LIVENESS_FLUSH_INTERVAL = env.float("LIVENESS_FLUSH_INTERVAL", default=10.0)
SWEEPER_INTERVAL = env.float("SWEEPER_INTERVAL", default=2.0)
# Beat ticks the schedules of the configuration repository this often (regions/clock/schedules.py);
# a due time first seen more than three ticks late counts as missed (catch_up).
SCHEDULE_TICK_SECONDS = env.float("SCHEDULE_TICK_SECONDS", default=5.0)
# A dispatched task nobody has claimed for this long while agents serving it are
# idle is presumed lost in flight and re-sent as the same attempt
# (regions/clock/lost_in_flight.py).
TASK_UNCLAIMED_RESEND_AFTER = env.float("TASK_UNCLAIMED_RESEND_AFTER", default=60.0)
# Do not mass-evict (the rule of Kubernetes' node lifecycle controller; see
# regions/clock/reaper.py): when more than this share of the fleet, and at
# least 2 agents, go silent together, a fleet of at most EVICTION_LARGE_FLEET
# agents evicts nobody; a larger one evicts at most EVICTION_SECONDARY_RATE of
# the fleet per reaper tick (oldest silence first), and nobody if all are silent.
EVICTION_HOLD_RATIO = env.float("EVICTION_HOLD_RATIO", default=0.5)
EVICTION_LARGE_FLEET = env.int("EVICTION_LARGE_FLEET", default=50)
EVICTION_SECONDARY_RATE = env.float("EVICTION_SECONDARY_RATE", default=0.01)
# A hold lasts at most this long: a real mass failure is evicted after it.
EVICTION_HOLD_MAX_SECONDS = env.float("EVICTION_HOLD_MAX_SECONDS", default=300.0)
# Before it holds, the reaper asks the broker whether the silent agents still hold
# their connections (regions/services/agents/presence.py): one whose consumers are
# gone is dead, and evicted at its TTL, hold or no hold. It asks about at most
# REAPER_BROKER_CHECK_MAX agents per tick and for at most REAPER_BROKER_CHECK_SECONDS;
# the rest, and all of them when the broker does not answer, are held as before.
REAPER_BROKER_CHECK_SECONDS = env.float("REAPER_BROKER_CHECK_SECONDS", default=2.0)
REAPER_BROKER_CHECK_MAX = env.int("REAPER_BROKER_CHECK_MAX", default=1000)
# No successful reaper tick for this many reaper intervals (liveness Redis or the
# reaper away): every agent gets a full TTL of grace before anyone is evicted.
EVICTION_GRACE_AFTER_TICKS = env.float("EVICTION_GRACE_AFTER_TICKS", default=3.0)
TASK_PAYLOAD_LIMIT_BYTES = env.int("TASK_PAYLOAD_LIMIT_BYTES", default=256 * 1024)
TASK_DEFAULT_TIMEOUT = env.int("TASK_DEFAULT_TIMEOUT", default=300)
TASK_DEFAULT_MAX_ATTEMPTS = env.int("TASK_DEFAULT_MAX_ATTEMPTS", default=3)
# The most attempts a task may have, manual retries included (submissions ask for at
# most 20); a retry past it is refused: the caller submits the task again.
TASK_ATTEMPTS_MAX = env.int("TASK_ATTEMPTS_MAX", default=50)
if not 20 <= TASK_ATTEMPTS_MAX <= MAX_ATTEMPT:
    raise environ.ImproperlyConfigured(f"TASK_ATTEMPTS_MAX must be from 20 to {MAX_ATTEMPT}")
# A caller's quotas at the region when the configuration repository's callers
# section sets none (0: no limit): tasks submitted per second (a batch counts
# each item) and tasks waiting or running at once. Over either: 429 naming it.
CALLER_SUBMISSIONS_PER_SECOND = env.int("CALLER_SUBMISSIONS_PER_SECOND", default=500)
CALLER_MAX_IN_FLIGHT = env.int("CALLER_MAX_IN_FLIGHT", default=20_000)
# Fair dispatch between tenants (regions/services/tasks/fair.py): a tenant has
# at most this many of its tasks per capability sent and not yet claimed,
# TENANT_WINDOW_PER_SLOT per slot (the summed concurrency of the agents serving
# the capability), at least TENANT_WINDOW_MIN; the rest wait in the database,
# and each claim sends the next. A flooding tenant waits behind its own work.
# TENANT_WINDOW_PER_SLOT=0 turns it off (every task is sent at once).
TENANT_WINDOW_PER_SLOT = env.float("TENANT_WINDOW_PER_SLOT", default=1.0)
TENANT_WINDOW_MIN = env.int("TENANT_WINDOW_MIN", default=4)
if TENANT_WINDOW_PER_SLOT < 0 or TENANT_WINDOW_MIN < 1:
    raise environ.ImproperlyConfigured("TENANT_WINDOW_PER_SLOT must be >= 0 and TENANT_WINDOW_MIN >= 1")
TASK_RETRY_BACKOFF_BASE = env.float("TASK_RETRY_BACKOFF_BASE", default=2.0)
TASK_RETRY_BACKOFF_MAX = env.float("TASK_RETRY_BACKOFF_MAX", default=300.0)
# A task still waiting for an agent this long after its current attempt was sent fails
# with reason no_agent (the sweeper); configuration tasks.<capability>.wait_deadline wins.
TASK_WAIT_DEADLINE = env.int("TASK_WAIT_DEADLINE", default=3 * 3600)
# Completion callbacks (regions/services/callbacks/): retried with backoff (the
# base doubled, capped) for this long after the task's finish, then given up.
CALLBACK_RETRY_HOURS = env.float("CALLBACK_RETRY_HOURS", default=24.0)
# A rotated callback secret keeps signing beside its successor this long.
CALLBACK_SECRET_GRACE_HOURS = env.float("CALLBACK_SECRET_GRACE_HOURS", default=24.0)
CALLBACK_BACKOFF_BASE = env.float("CALLBACK_BACKOFF_BASE", default=10.0)
CALLBACK_BACKOFF_MAX = env.float("CALLBACK_BACKOFF_MAX", default=3600.0)
CALLBACK_TIMEOUT_SECONDS = env.float("CALLBACK_TIMEOUT_SECONDS", default=5.0)  # one attempt, connect included
# A claimed delivery is another sender's to take only after this: longer than any attempt.
CALLBACK_LEASE_SECONDS = env.float("CALLBACK_LEASE_SECONDS", default=60.0)
CALLBACK_SWEEP_INTERVAL = env.float("CALLBACK_SWEEP_INTERVAL", default=2.0)
# One sender at a time per region, sending for at most this long per tick: the
# orchestrator's other worker slot stays free for the clock jobs.
CALLBACK_SEND_BUDGET_SECONDS = env.float("CALLBACK_SEND_BUDGET_SECONDS", default=10.0)
# A registration token accepted in addition to those in the database (bootstrap/demo).
AGENT_REGISTRATION_TOKEN = env.str("AGENT_REGISTRATION_TOKEN", default="")
# At most this many registrations per minute with one registration token (a region's
# at the region, the router's where the router places agents), counted in Redis: over
# it, 429 with Retry-After. 0: no limit. Redis down: no limit. The bootstrap token
# above is not limited.
REGISTRATION_RATE_PER_TOKEN = env.int("REGISTRATION_RATE_PER_TOKEN", default=60)

# --- Region <-> router ------------------------------------------------------
# Where this region pushes its summary (empty: no router, the region runs alone).
ROUTER_URL = env.str("ROUTER_URL", default="")
# This region's token at the router (Authorization: Bearer …).
REGION_TOKEN = env.str("REGION_TOKEN", default="")
SUMMARY_INTERVAL = env.float("SUMMARY_INTERVAL", default=60.0)
# Router side.
# A forward tries up to 5 regions, each connect within the connect timeout, and
# all of it within the budget (each attempt may wait for an answer as long as is
# left of it): well under the web worker's 30 s timeout (project/gunicorn_conf.py).
ROUTER_FORWARD_CONNECT_TIMEOUT = env.float("ROUTER_FORWARD_CONNECT_TIMEOUT", default=2.0)
ROUTER_FORWARD_BUDGET_SECONDS = env.float("ROUTER_FORWARD_BUDGET_SECONDS", default=10.0)
# The console's task finder (router/services/locate.py) asks every enabled region at
# once: each within the timeout, all within the budget, this many at a time.
ROUTER_LOCATE_TIMEOUT_SECONDS = env.float("ROUTER_LOCATE_TIMEOUT_SECONDS", default=3.0)
ROUTER_LOCATE_BUDGET_SECONDS = env.float("ROUTER_LOCATE_BUDGET_SECONDS", default=8.0)
ROUTER_LOCATE_CONCURRENCY = env.int("ROUTER_LOCATE_CONCURRENCY", default=32)
ROUTER_TRUST_FORWARDED_FOR = env.bool("ROUTER_TRUST_FORWARDED_FOR", default=False)
# Forwards a region refused (429, 503, 401), did not answer or failed (5xx), or could
# not be reached count against its rank (docs/api.md, the router): they weigh half after a
# quarter of this window, and none once its latest failure is this old, so a region
# that recovers regains its rank within the window.
ROUTER_FORWARD_PENALTY_WINDOW_SECONDS = env.float("ROUTER_FORWARD_PENALTY_WINDOW_SECONDS", default=180.0)
# How far ahead of the router's clock a summary may be dated (replays are refused
# by date, so one dated far ahead would refuse the region's genuine ones).
ROUTER_SUMMARY_MAX_SKEW_SECONDS = env.float("ROUTER_SUMMARY_MAX_SKEW_SECONDS", default=300.0)
# The most agents (idle or not) a region's summary is believed for, unless the
# operator set the region's own ceiling: a region token that claims a million idle
# agents wins no more than this much of the ranking.
ROUTER_REGION_CEILING = env.int("ROUTER_REGION_CEILING", default=20_000)
# Router assertions (project/accounts/assertions.py, docs/security.md): the router never
# relays a caller's credential; it forwards with a short-lived assertion signed by its
# Ed25519 key, and hands a joining agent a registration grant signed the same way.
# Router side: its private key (base64 of the 32 raw bytes, or a PEM; `manage.py
# router_signing_key` makes one). Region side: the router's public key(s), comma-separated
# (more than one while a key is being rotated). Empty: no forward, no grant.
ROUTER_SIGNING_KEY = env.str("ROUTER_SIGNING_KEY", default="", multiline=True)
ROUTER_PUBLIC_KEYS = env.list("ROUTER_PUBLIC_KEYS", default=[]) + (
    [env.str("ROUTER_PUBLIC_KEY", multiline=True)] if env.str("ROUTER_PUBLIC_KEY", default="") else [])
ROUTER_ASSERTION_TTL_SECONDS = env.float("ROUTER_ASSERTION_TTL_SECONDS", default=30.0)
ROUTER_GRANT_TTL_SECONDS = env.float("ROUTER_GRANT_TTL_SECONDS", default=300.0)
# How far the router's and a region's clocks may differ when an assertion is checked.
ROUTER_ASSERTION_SKEW_SECONDS = env.float("ROUTER_ASSERTION_SKEW_SECONDS", default=5.0)

# --- GitOps configuration (sync_config) --------------------------------------
CONFIG_REPO = env.str("CONFIG_REPO", default="")
CONFIG_REF = env.str("CONFIG_REF", default="main")
CONFIG_SYNC_INTERVAL = env.float("CONFIG_SYNC_INTERVAL", default=60.0)

# --- Agent runtime -----------------------------------------------------------
# Capability handlers may only read files below this directory.
AGENT_DATA_ROOT = env.str("AGENT_DATA_ROOT", default=str(VAR_DIR / "data"))
AGENT_MAX_INPUT_BYTES = env.int("AGENT_MAX_INPUT_BYTES", default=64 * 1024 * 1024)
AGENT_MAX_RECORDS = env.int("AGENT_MAX_RECORDS", default=50_000)
# How long an agent keeps asking an unreachable region before it gives a message
# back to the broker (claim) or sends the outcome over the broker (report).
AGENT_CLAIM_PATIENCE_SECONDS = env.float("AGENT_CLAIM_PATIENCE_SECONDS", default=60.0)
AGENT_REPORT_PATIENCE_SECONDS = env.float("AGENT_REPORT_PATIENCE_SECONDS", default=15.0)
# How long past its timeout (the soft limit) an attempt may take to report before
# the hard limit kills it; well above AGENT_REPORT_PATIENCE_SECONDS.
REPORT_ALLOWANCE_SECONDS = env.int("REPORT_ALLOWANCE_SECONDS", default=REPORT_ALLOWANCE_SECONDS)
# Handler modules every agent of this host loads, comma-separated (besides
# run_agent --handlers and the meridian.handlers entry points): agents/handlers/__init__.py.
AGENT_HANDLER_MODULES = env.str("AGENT_HANDLER_MODULES", default="")
# An agent's own state (its credential, outcomes not yet delivered), per agent id.
AGENT_STATE_DIR = env.str("AGENT_STATE_DIR", default=str(VAR_DIR / "agents"))

# Mount the baseline views bench/heartbeat.py compares against (never in production).
BENCH_ENDPOINTS = env.bool("BENCH_ENDPOINTS", default=False)

# The largest outcome an agent may report (data_ingestion's records included).
AGENT_MAX_RESULT_BYTES = env.int("AGENT_MAX_RESULT_BYTES", default=8 * 1024 * 1024)
# Largest message a worker decodes (a report carries a result; escaping can
# double it); anything bigger is a dead letter.
BROKER_MESSAGE_MAX_BYTES = env.int("BROKER_MESSAGE_MAX_BYTES", default=2 * AGENT_MAX_RESULT_BYTES + 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(TASK_PAYLOAD_LIMIT_BYTES * 4, AGENT_MAX_RESULT_BYTES + 1024 * 1024)
# The web server buffers a body before Django (and authentication) sees it: only
# an agent's outcome report may be as large as DATA_UPLOAD_MAX_MEMORY_SIZE; any
# other request body is refused past WEB_BODY_LIMIT, and a worker holding more
# than WEB_BUFFER_BUDGET of bodies in flight answers 503 (project/asgi.py).
WEB_BODY_LIMIT = env.int("WEB_BODY_LIMIT", default=max(TASK_PAYLOAD_LIMIT_BYTES * 4, 1024 * 1024))
WEB_BUFFER_BUDGET = env.int("WEB_BUFFER_BUDGET", default=128 * 1024 * 1024)
# Long-polls (?wait=, POST /api/v1/tasks/wait) held on each web worker's event
# loop (project/waiting.py): past these a new wait is answered at once; every
# WAIT_RECHECK_SECONDS the held ids are checked in the database (the safety net
# under the Redis wake-ups, and all there is while Redis is down).
WAIT_MAX_WAITERS = env.int("WAIT_MAX_WAITERS", default=5000)
WAIT_MAX_IDS = env.int("WAIT_MAX_IDS", default=50_000)
WAIT_MAX_BYTES = env.int("WAIT_MAX_BYTES", default=64 * 1024 * 1024)
WAIT_RECHECK_SECONDS = env.float("WAIT_RECHECK_SECONDS", default=2.0)
# What the held waits wait for, per role: the module of the role's app whose channel()
# names the Redis channel announcing finished tasks and whose task_finished_among(ids)
# is the database recheck. The router holds no waits.
WAIT_EVENTS = {"region": "regions.services.task_events", "router": ""}
# The longest a wait is held, whatever the caller asked (at most 60): set it under
# the idle timeout of a proxy in front of the web.
WAIT_HOLD_MAX_SECONDS = env.float("WAIT_HOLD_MAX_SECONDS", default=60.0)
# Dead letters (messages a consumer dropped): kept this long, at most this many,
# and an agent may report this many a minute (wire/deadletter.py).
DEAD_LETTER_RETENTION_DAYS = env.int("DEAD_LETTER_RETENTION_DAYS", default=7)
# Audit rows older than this are deleted (region: daily by beat; router: manage.py
# audit_prune from the operator's scheduler). 0 keeps every row.
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=400)
DEAD_LETTER_MAX_ROWS = env.int("DEAD_LETTER_MAX_ROWS", default=100_000)  # shared fairly by source
DEAD_LETTER_AGENT_RATE_PER_MINUTE = env.int("DEAD_LETTER_AGENT_RATE_PER_MINUTE", default=60)

# One line per event, with its region, agent and task (project/logging.py):
# LOG_FORMAT=json writes each as one JSON object for a log pipeline.
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
LOGGING = logging_config(log_format=LOG_FORMAT, level=env.str("LOG_LEVEL", default="INFO"),
                         region=REGION_ID if ROLE == "region" else None)
# Celery workers (agents) keep this configuration in JSON mode instead of Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
