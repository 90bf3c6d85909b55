"""What the Synchro server's own configuration names: its top-level settings the worker leaves
alone, and the one store package the worker implements."""

from __future__ import annotations

#: Top-level settings the Synchro server reads (synchro-config.js, app.js, synchro-api) that the
#: worker does not use.  Any other UPPER_CASE name not close to one of the worker's is taken as
#: the server's too: an app may read its own through ``Synchro.getConfig``.
SERVER_SETTINGS = (
    "CLIENT_VERSION", "PROTOCOL", "HOST", "PORT", "NOFORK", "DEBUG_BASE_PORT",
    "HEALTH_CHECK_PATH", "API_PATH_PREFIX", "APP_PATH_PREFIX", "APPS", "NOSTUDIO",
    "STUDIO_USERS", "STUDIO_PATH_PREFIX", "STUDIO_NOAUTH", "STUDIO_TITLE", "STUDIO_SUBTITLE",
    "API_URI_BASE", "APP_RESOURCE_PREFIX", "SERVER_URL_BASE", "STATIC_CACHE_MAXAGE",
    "LOG4JS_CONFIG", "NO_SYNCDEPS", "SSL_KEY", "SSL_CERT", "SSL_KEY_PATH", "SSL_CERT_PATH",
)

#: The package the server loads its stores from; the worker implements synchro-api's only.
STORE_PACKAGE = "synchro-api"
