"""The region's clock jobs, one module per job (as Sentry's monitors/clock_tasks/):
the sweeper's task jobs, which sweep.py runs in turn. Celery beat ticks them
through regions/tasks.py."""
