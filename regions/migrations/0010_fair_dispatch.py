"""Fair dispatch between tenants, and their quotas: a task beyond its tenant's window on a
capability is held in the database (Task.held) until one of that tenant's
tasks leaves the window; the window is sized from the capability's slots
(the summed concurrency of the online agents that take work), which the
counters now keep beside agents and idle; a caller's tasks in flight are
counted from a partial index of the active tasks by caller. The trigger functions of 0007 are
replaced by ones that also sum slots (and count a change of concurrency)."""
from django.db import migrations, models

# d(capabilities, n, i, s): +1/-1 per agent row entering/leaving "online and
# active", its idle share, and its concurrency.
_APPLY = """
    INSERT INTO regions_capabilitycounter (capability, agents, idle, slots)
    SELECT cap, SUM(n), SUM(i), SUM(s) FROM (
        SELECT x.cap, d.n, d.i, d.s FROM ({rows}) d(capabilities, n, i, s)
        CROSS JOIN LATERAL (
            SELECT '' UNION
            SELECT jsonb_array_elements_text(CASE WHEN jsonb_typeof(d.capabilities) = 'array'
                                             THEN d.capabilities ELSE '[]'::jsonb END)
        ) x(cap)
    ) t
    GROUP BY cap HAVING SUM(n) <> 0 OR SUM(i) <> 0 OR SUM(s) <> 0 ORDER BY cap
    ON CONFLICT (capability) DO UPDATE
        SET agents = regions_capabilitycounter.agents + EXCLUDED.agents,
            idle = regions_capabilitycounter.idle + EXCLUDED.idle,
            slots = regions_capabilitycounter.slots + EXCLUDED.slots;
"""
_IN = "r.status = 'online' AND r.desired = 'active'"
_NEW = f"SELECT r.capabilities, 1, CASE WHEN r.busy THEN 0 ELSE 1 END, r.concurrency FROM new_rows r WHERE {_IN}"
_OLD = f"SELECT r.capabilities, -1, CASE WHEN r.busy THEN 0 ELSE -1 END, -r.concurrency FROM old_rows r WHERE {_IN}"
_CHANGED = ("JOIN {other} o ON o.id = r.id WHERE (r.status, r.desired, r.busy, r.capabilities, r.concurrency) "
            "IS DISTINCT FROM (o.status, o.desired, o.busy, o.capabilities, o.concurrency) AND ")
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
    "DELETE FROM regions_capabilitycounter;",
    _APPLY.format(rows=_NEW.replace("new_rows", "regions_agent")),
])


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


class Migration(migrations.Migration):

    dependencies = [
        ('regions', '0009_deadletter_source_index'),
    ]

    operations = [
        migrations.AddField(
            model_name='capabilitycounter',
            name='slots',
            field=models.IntegerField(default=0, help_text='their summed concurrency (migration 0010)'),
        ),
        migrations.AddField(
            model_name='task',
            name='held',
            field=models.BooleanField(default=False, help_text='beyond its tenant\'s window on the capability: sent '
                                                               'when one of the tenant\'s tasks there leaves it'),
        ),
        migrations.AddIndex(
            model_name='task',
            index=models.Index(condition=models.Q(('held', True)), fields=['submitted_by', 'capability', '-priority',
                                                                           'created_at'], name='task_held_idx'),
        ),
        migrations.AddIndex(
            model_name='task',
            index=models.Index(condition=models.Q(('dispatched_at__isnull', False),
                                                  ('status__in', ['waiting', 'queued']),
                                                  ('target_agent', '')),
                               fields=['submitted_by', 'capability'], name='task_window_idx'),
        ),
        migrations.AddIndex(
            model_name='task',
            index=models.Index(condition=models.Q(('status__in', ['waiting', 'queued', 'running', 'retrying'])),
                               fields=['submitted_by'], name='task_active_by_caller_idx'),
        ),
        # The old functions stay on the way back: they ignore the new column.
        migrations.RunPython(forward, migrations.RunPython.noop),
    ]
