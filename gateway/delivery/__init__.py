"""Delivery: claim a job, compose it, resolve and send, record the outcome."""
