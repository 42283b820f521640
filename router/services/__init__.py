"""The router's writes, one module per concern: refusals (the errors services
raise), regions (regions and their tokens, registration tokens), summaries
(summary_ingest), routing (route, route_all, region_pick) and forwarding
(task_forward, task_batch_forward, task_redirect). Reads are in
router/selectors.py. Import from the modules; nothing is re-exported here."""
