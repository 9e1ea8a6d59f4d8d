"""Notices: templates and context to an EmailMessage, and DKIM signing. Never sends."""
