"""The SMTP server's STARTTLS context, from `[server] tls_cert` and `tls_key`.

Made once at start: a certificate that cannot be loaded is a configuration error, found
before anything listens. A changed certificate needs a restart (reload.py RESTART_ONLY).
"""

from __future__ import annotations

import ssl

from gateway.config import ServerSettings
from gateway.errors import ConfigError

__all__ = ["tls_context"]


def tls_context(server: ServerSettings) -> ssl.SSLContext | None:
    """A server context for STARTTLS, or None when no certificate is configured.

    Raises:
        ConfigError: the certificate or key cannot be loaded.
    """
    if server.tls_cert is None or server.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(server.tls_cert, server.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("server.tls_cert", f"cannot load certificate/key: {exc}") from exc
    return context
