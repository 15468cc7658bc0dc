"""Where the dashboard listens: ``HOST:PORT`` parsed (validated with the scenario, before any
load), and whether a host is loopback (anything else requires a token)."""

from __future__ import annotations

import ipaddress
import secrets
from typing import Final

from loadgen.errors import ConfigError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "is_loopback", "parse_address", "token_for"]

DEFAULT_HOST: Final = "127.0.0.1"
#: A fixed default, so a bookmark keeps working from one run to the next (k6's dashboard port).
DEFAULT_PORT: Final = 5665


def parse_address(text: str, *, key: str = "output.dashboard") -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT``, ``PORT`` or ``HOST`` (``[::1]:PORT`` for IPv6); defaults
    127.0.0.1 and ``DEFAULT_PORT``."""
    text = text.strip()
    host, port_text = DEFAULT_HOST, ""
    if text.startswith("["):
        inner, _, rest = text[1:].partition("]")
        host, port_text = inner, rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        host = host or DEFAULT_HOST
    elif text.isdigit():
        port_text = text
    elif text:
        host = text
    if not port_text:
        return host, DEFAULT_PORT
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(f"expected HOST:PORT with a port 0-65535, got {text!r}", key=key)
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_for(host: str, given: str | None) -> str | None:
    """The token visitors must show: the one given, else a fresh one unless ``host`` is
    loopback (only this machine's users reach it there)."""
    if given is not None or is_loopback(host):
        return given
    return secrets.token_urlsafe(18)
