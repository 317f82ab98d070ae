"""Metric providers: adapters that run a check's queries and hand the answers to the core's verdicts."""
