"""Schedules of the configuration repository (schedules.<name>): their due
times (due.py, pure) and the run of one due time (runs.py)."""
