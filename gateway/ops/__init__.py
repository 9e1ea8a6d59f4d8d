"""Operator commands: audit, queue, check-config, preview."""
