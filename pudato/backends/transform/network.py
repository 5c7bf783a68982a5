"""The sandbox's network guard: Python in the dbt child reaches only the lake's S3 endpoint and the catalog.

A Python model (when a deployment allows them) or any library dbt loads could
otherwise open a socket to the cloud's metadata service, the broker, the
registry or anywhere on the internet. :func:`install_guard` adds an audit hook
(PEP 578) that sees every ``socket.getaddrinfo``, ``socket.connect``,
``socket.sendto`` and ``socket.sendmsg`` made through Python's ``socket``
module (urllib, requests, boto3, psycopg's Python side all go through it) and
refuses each one whose host and port are not on the allow-list. An audit hook
cannot be removed once added, so later Python code cannot switch it off.

What it does not cover:

* sockets opened inside C extensions: DuckDB's httpfs and postgres extensions
  connect from C++, so DuckDB's reach is governed by DuckDB's own lockdown
  (:mod:`.lockdown`), not by this hook;
* code set on escaping: ``ctypes`` calls libc's ``connect`` directly, and a
  subprocess is a new interpreter without the hook. Against that the child runs
  in a network namespace of its own (:mod:`.isolation`), unless a deployment
  chose the hook alone (``PUDATO_TRANSFORM__NETWORK_ISOLATION=hook``).

``dbt deps`` fetches packages from anywhere, so the guard is not installed when
``PUDATO_TRANSFORM__ALLOW_PACKAGE_DOWNLOADS`` is on.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from pudato.settings import Settings

_CHECKED_EVENTS = frozenset({"socket.getaddrinfo", "socket.connect", "socket.sendto", "socket.sendmsg"})


class NetworkRefused(PermissionError):
    """Python code in the sandbox asked for a host or port that is not the lake's S3 endpoint or catalog."""


def sandbox_endpoints(settings: Settings) -> list[str]:
    """``host:port`` of the lake's S3 endpoint and (a PostgreSQL lake) its catalog, from the settings."""
    aws = settings.aws
    endpoints: list[str] = []
    if aws.endpoint_url:
        endpoint = urlparse(aws.endpoint_url)
        port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
        endpoints.append(f"{endpoint.hostname}:{port}")
    else:  # real AWS: the regional endpoint, path-style and virtual-hosted
        endpoints += [f"s3.{aws.region}.amazonaws.com:443", "s3.amazonaws.com:443"]
        data_path = settings.warehouse.data_path or ""
        if data_path.startswith("s3://"):
            bucket = data_path.removeprefix("s3://").split("/", 1)[0]
            endpoints.append(f"{bucket}.s3.{aws.region}.amazonaws.com:443")
    if settings.warehouse.backend == "ducklake":
        from pudato.backends.warehouse.lake_catalog import catalog_from_settings  # lazy: only the lake has one

        catalog = catalog_from_settings(settings)
        if catalog.kind == "postgres":
            endpoints.append(f"{catalog.host or 'localhost'}:{catalog.port or 5432}")
    return endpoints


def _split(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]").lower(), int(port)


def install_guard(allowed: Iterable[str]) -> None:
    """Refuse, for the rest of this process, Python-level network use outside ``allowed`` (``host:port``)."""
    names = [_split(endpoint) for endpoint in allowed]
    permitted = set(names)
    for host, port in names:  # connect() sees addresses, so each name's addresses are allowed too
        with contextlib.suppress(OSError):  # not resolvable now: only the name itself stays allowed
            permitted.update((str(info[4][0]).lower(), port) for info in socket.getaddrinfo(host, port))
    frozen, hosts = frozenset(permitted), frozenset(host for host, _ in permitted)
    described = ", ".join(f"{host}:{port}" for host, port in names) or "nothing"

    def refuse(target: str) -> NetworkRefused:
        return NetworkRefused(
            f"the transform sandbox refused a network connection to {target}: Python code in a logic repository "
            f"may reach only the lake's S3 endpoint and catalog ({described})"
        )

    def guard(event: str, args: tuple[Any, ...]) -> None:
        if event not in _CHECKED_EVENTS:
            return
        if event == "socket.getaddrinfo":
            host, port = args[0], args[1]
            if host is None:
                return  # a local (passive) address: no lookup, and connect() is checked anyway
            name = (host.decode(errors="replace") if isinstance(host, bytes) else str(host)).lower()
            if name not in hosts or (isinstance(port, int) and port and (name, port) not in frozen):
                raise refuse(f"{name}:{port}")
            return
        address = args[1] if len(args) > 1 else None
        if address is None:
            return  # sendmsg on a connected socket: its connect() was checked
        if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[0], str):
            if (address[0].lower(), address[1]) not in frozen:
                raise refuse(f"{address[0]}:{address[1]}")
            return
        raise refuse(f"the local socket {address!r}")  # AF_UNIX and other families: never the lake

    sys.addaudithook(guard)
