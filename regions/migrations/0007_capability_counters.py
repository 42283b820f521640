"""Per-capability counters of online agents that take work, kept by statement-
level triggers with transition tables: one INSERT ... ON CONFLICT per statement
(not one per row: a bulk UPDATE of 20,000 agents would otherwise update the
same counter row 20,000 times in one transaction), ordered by capability so
concurrent writers lock counter rows in one order. An UPDATE that changes none
of status, desired, busy, capabilities (the bulk last_seen flush) adds nothing.
PostgreSQL only: elsewhere (SQLite, the embedded demo) the code scans instead."""
from django.db import migrations, models

# d(capabilities, n, i): +1/-1 per agent row entering/leaving "online and active".
_APPLY = """
    INSERT INTO regions_capabilitycounter (capability, agents, idle)
    SELECT cap, SUM(n), SUM(i) FROM (
        SELECT x.cap, d.n, d.i FROM ({rows}) d(capabilities, n, i)
        CROSS JOIN LATERAL (
            SELECT '' UNION
            SELECT jsonb_array_elements_text(CASE WHEN jsonb_typeof(d.capabilities) = 'array'
                                             THEN d.capabilities ELSE '[]'::jsonb END)
        ) x(cap)
    ) t
    GROUP BY cap HAVING SUM(n) <> 0 OR SUM(i) <> 0 ORDER BY cap
    ON CONFLICT (capability) DO UPDATE
        SET agents = regions_capabilitycounter.agents + EXCLUDED.agents,
            idle = regions_capabilitycounter.idle + EXCLUDED.idle;
"""
_IN = "r.status = 'online' AND r.desired = 'active'"
_NEW = f"SELECT r.capabilities, 1, CASE WHEN r.busy THEN 0 ELSE 1 END FROM new_rows r WHERE {_IN}"
_OLD = f"SELECT r.capabilities, -1, CASE WHEN r.busy THEN 0 ELSE -1 END FROM old_rows r WHERE {_IN}"
_CHANGED = ("JOIN {other} o ON o.id = r.id WHERE (r.status, r.desired, r.busy, r.capabilities) "
            "IS DISTINCT FROM (o.status, o.desired, o.busy, o.capabilities) AND ")
_UPDATE_ROWS = (_NEW.replace("WHERE ", _CHANGED.format(other="old_rows"))
                + " UNION ALL "
                + _OLD.replace("WHERE ", _CHANGED.format(other="new_rows")))


def _function(name: str, rows: str) -> str:
    return (f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
            f"{_APPLY.format(rows=rows)}\n    RETURN NULL;\nEND $$;")


FORWARD = "\n".join([
    _function("regions_agent_counters_ins", _NEW),
    _function("regions_agent_counters_del", _OLD),
    _function("regions_agent_counters_upd", _UPDATE_ROWS),
    """CREATE OR REPLACE FUNCTION regions_agent_counters_trunc() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM regions_capabilitycounter;
    RETURN NULL;
END $$;""",
    "CREATE TRIGGER regions_agent_counters_ins AFTER INSERT ON regions_agent REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION regions_agent_counters_ins();",
    "CREATE TRIGGER regions_agent_counters_del AFTER DELETE ON regions_agent REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION regions_agent_counters_del();",
    "CREATE TRIGGER regions_agent_counters_upd AFTER UPDATE ON regions_agent "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION regions_agent_counters_upd();",
    "CREATE TRIGGER regions_agent_counters_trunc AFTER TRUNCATE ON regions_agent "
    "FOR EACH STATEMENT EXECUTE FUNCTION regions_agent_counters_trunc();",
    # The agents already there.
    "DELETE FROM regions_capabilitycounter;",
    _APPLY.format(rows=_NEW.replace("new_rows", "regions_agent")),
])

BACKWARD = """
DROP TRIGGER IF EXISTS regions_agent_counters_ins ON regions_agent;
DROP TRIGGER IF EXISTS regions_agent_counters_del ON regions_agent;
DROP TRIGGER IF EXISTS regions_agent_counters_upd ON regions_agent;
DROP TRIGGER IF EXISTS regions_agent_counters_trunc ON regions_agent;
DROP FUNCTION IF EXISTS regions_agent_counters_ins();
DROP FUNCTION IF EXISTS regions_agent_counters_del();
DROP FUNCTION IF EXISTS regions_agent_counters_upd();
DROP FUNCTION IF EXISTS regions_agent_counters_trunc();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):

    dependencies = [
        ('regions', '0006_task_attempt_agent_index'),
    ]

    operations = [
        migrations.CreateModel(
            name='CapabilityCounter',
            fields=[
                ('capability', models.TextField(primary_key=True, serialize=False)),
                ('agents', models.IntegerField(default=0)),
                ('idle', models.IntegerField(default=0)),
            ],
        ),
        migrations.RunPython(forward, backward),
    ]
