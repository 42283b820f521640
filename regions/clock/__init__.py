"""The region's clock jobs, one module per job (as Sentry's monitors/clock_tasks/):
the sweeper's task jobs (sweep.py runs them in turn), the reaper and the liveness
flush. Celery beat ticks them through regions/tasks.py."""
