"""Mail as data: addresses, the facts of a message, DMARC evaluation, redaction. Pure: no I/O."""
