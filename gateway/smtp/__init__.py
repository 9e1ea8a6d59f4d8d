"""The SMTP side: the server, the aiosmtpd handler, reply texts and sender checks."""
