"""ACME's task code: plain functions registered with Meridian's @handler."""
