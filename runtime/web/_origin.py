"""Where a browser says a request comes from, and what a request body claims to be (pure).

Dashboard actions and logins are accepted only from the dashboard's own origin; another
port of the same host is another origin (``SameSite`` cookies do not tell them apart).
"""

from __future__ import annotations

import urllib.parse

__all__ = ["is_json", "same_origin"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def same_origin(origin: str | None, fetch_site: str | None, host: str | None) -> bool | None:
    """True when the browser says the request comes from the origin serving ``host``
    (the ``Host`` header), False when it says another or an opaque one (``null``), None
    when it says nothing: neither ``Origin`` nor ``Sec-Fetch-Site`` (a script, not a
    browser). The scheme is not compared, so a proxy that ends TLS changes nothing."""
    if origin is None and fetch_site is None:
        return None
    if fetch_site is not None and fetch_site.strip().lower() != "same-origin":
        return False
    if origin is None:
        return True
    try:
        parts = urllib.parse.urlsplit(origin.strip())
        served = urllib.parse.urlsplit(f"//{host or ''}")
        default = _DEFAULT_PORTS.get(parts.scheme.lower())
        ours = (served.hostname, served.port or default)
        theirs = (parts.hostname, parts.port or default)
    except ValueError:  # a port out of range or a malformed IPv6 literal
        return False
    return parts.hostname is not None and default is not None and ours == theirs


def is_json(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` says JSON (a browser form cannot send that cross-origin
    without a CORS preflight)."""
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"
