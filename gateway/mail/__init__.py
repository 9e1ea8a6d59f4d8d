"""Mail as data: addresses, the facts of a message, DMARC, redaction and MX/SPF look-ups."""
