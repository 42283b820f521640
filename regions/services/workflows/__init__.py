"""Workflows in a region: steps in order (a chain: each step's input is its
payload merged with the result of the step before) and groups whose members run
in parallel, the step after a group receiving the list of their results (a
join, Celery's chord). Every step is an ordinary Task; the next step's tasks are
created in the transaction that records the success of the step before
(advance.py, called from the task services), under a row lock on the workflow,
and a step has at most one task (a partial unique constraint on
Task.workflow_step): a join fires once, and a crash anywhere neither loses a
step nor makes one twice. The sweeper brings up to date any workflow a lost
transition left behind (regions/clock/workflows.py).

Modules: submit.py (accept, with each step's submission checks), advance.py
(the transition), cancel.py, retry.py. They log to `regions.services.workflows`."""
