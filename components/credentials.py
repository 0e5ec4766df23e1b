"""Where credentials may go: Google tokens only to Google API hosts, bearer tokens never over
plain HTTP to another machine.

A pipeline parameter (``api_endpoint``, an endpoint artifact's URL) must not be able to send the
step's Google access token to a host an attacker chose. Loopback emulators (fake Vertex, fake
GCS) get no credentials at all.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlparse

from kfp_serve.components.errors import UserError

#: hosts that receive Google credentials over HTTPS: the Google APIs, and Vertex AI dedicated
#: endpoints (``<id>.<region>-<project>.prediction.vertexai.goog``)
GOOGLE_HOST_SUFFIXES = (".googleapis.com", ".prediction.vertexai.goog")


def _split(url: str) -> tuple[str, str]:
    """``(scheme, host)``; a bare ``host[:port]`` counts as https (how Google clients take it)."""
    parsed = urlparse(url if "://" in url else f"https://{url}")
    return parsed.scheme, (parsed.hostname or "").lower()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def google_credentials_for(url: str) -> bool:
    """Whether ``url`` gets Google credentials: True for https Google API hosts, False for a
    loopback emulator over http; anything else is refused (UserError naming the host)."""
    scheme, host = _split(url)
    if scheme == "https" and host.endswith(GOOGLE_HOST_SUFFIXES):
        return True
    if scheme == "http" and is_loopback(host):
        return False
    raise UserError(f"refusing to send Google credentials to {url!r}: only https://*.googleapis.com"
                    " (and Vertex AI dedicated endpoints) get them; a local emulator must be"
                    " http://127.0.0.1:PORT")


def check_bearer_target(url: str) -> None:
    """A bearer token may go over https, or over plain http to this machine only."""
    scheme, host = _split(url)
    if scheme == "http" and not is_loopback(host):
        raise UserError(f"refusing to send a bearer token over plain http to {host!r}: anyone on"
                        " the path could read it; use https (or a port-forward to 127.0.0.1)")
