"""Which URLs the load tester may aim at: loopback only, unless told otherwise."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class TargetError(ValueError):
    """A URL is malformed, or points away from this machine without ``--allow-remote``."""


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    # Every address the name resolves to must be local, or a DNS answer could redirect load.
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check(urls: list[str], *, allow_remote: bool) -> None:
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise TargetError(f"{url!r} is not a ws:// or wss:// URL")
        if not allow_remote and not _is_loopback(parts.hostname):
            raise TargetError(
                f"{url} is not a loopback address: generating load against another machine "
                "needs --allow-remote (and its owner's consent)"
            )
