"""The dbt child's own network, in which only the lake's S3 endpoint and catalog answer.

The worker starts the child through util-linux's ``unshare`` (:func:`command`):
a new user namespace (the child keeps no capability over the host), network
namespace (no interface but its own loopback), mount namespace and pid
namespace (with its own ``/proc``: the worker's processes, and their
environments, are out of sight). Whatever the code in the child does (a
subprocess, ``ctypes``, a C extension), no address outside is reachable.

Before any dbt code loads, :func:`open_endpoints` listens inside the namespace
on each allowed endpoint's address and hands the listening sockets to the
worker over an inherited Unix socket; the worker (:mod:`.relay`) accepts on
them and connects to the real endpoint. A loopback address keeps its own
address; a host name gets a loopback address of its own through the
namespace's ``/etc/hosts``, so URLs, ports and TLS host names stay as they are.

The mount namespace also hides (:func:`hide`) where the platform's secrets are
usually kept on disk: the worker's ``.env`` and its user's credential folders.
It is a list of known places, not a filesystem sandbox: the child's processes act
on files as the worker's user.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import socket
import struct
from fcntl import ioctl
from pathlib import Path

from pudato.errors import ConfigurationError

UNSHARE_FLAGS = ("--user", "--map-root-user", "--net", "--pid", "--fork", "--mount", "--mount-proc", "--kill-child")
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_MS_BIND, _MS_NOSUID, _MS_NODEV = 4096, 2, 4
_FIRST_NAMED = 10  # names get 127.0.0.10, 127.0.0.11, ...: clear of 127.0.0.1 and of a host's 127.0.1.1


def command(unshare: str) -> list[str]:
    """The words that start a program in the child's namespaces (``unshare`` is the binary's path)."""
    return [unshare, *UNSHARE_FLAGS]


def listen_addresses(endpoints: list[str]) -> dict[str, str]:
    """Each endpoint's host, and the address it answers on inside the namespace.

    Raises ConfigurationError for an address that cannot be mapped: an IP address
    outside loopback (a name is needed to give it a loopback address of its own).
    """
    addresses: dict[str, str] = {}
    for endpoint in endpoints:
        host = endpoint.rpartition(":")[0].strip("[]").lower()
        if host in addresses:
            continue
        if host == "localhost":
            addresses[host] = "127.0.0.1"
            continue
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            addresses[host] = f"127.0.0.{_FIRST_NAMED + sum(1 for a in addresses if not _is_ip(a))}"
            continue
        if not literal.is_loopback:
            raise ConfigurationError(
                f"the transform sandbox reaches the lake by name, and {host} is an IP address outside loopback: "
                "set the S3 endpoint (PUDATO_AWS__ENDPOINT_URL) or the catalog (PUDATO_WAREHOUSE__CATALOG_URL) by "
                "DNS name, or set PUDATO_TRANSFORM__NETWORK_ISOLATION=hook",
                host=host,
            )
        addresses[host] = host
    return addresses


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    return True


def open_endpoints(endpoints: list[str], channel_fd: int, folder: Path) -> None:
    """Inside the new namespaces: bring loopback up, name the endpoints, and hand their listeners to the worker."""
    _loopback_up()
    addresses = listen_addresses(endpoints)
    hosts = folder / "hosts"
    hosts.write_text(
        "127.0.0.1 localhost\n"
        + "".join(f"{address} {host}\n" for host, address in addresses.items() if not _is_ip(host))
    )
    _bind_mount(hosts, Path("/etc/hosts"))
    listeners = []
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        address = addresses[host.strip("[]").lower()]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        listeners.append(socket.create_server((address, int(port)), family=family, backlog=64))
    with socket.socket(fileno=channel_fd) as channel:
        socket.send_fds(channel, [json.dumps(endpoints).encode()], [listener.fileno() for listener in listeners])
    for listener in listeners:  # the worker holds them now; nothing in here may accept the lake's connections
        listener.close()


# Where a host keeps credentials for the worker's user: the child sees them empty. Its own HOME
# is its private folder, so nothing a build needs lives in these.
HOME_SECRETS = (".aws", ".azure", ".config/gcloud", ".dbt", ".docker", ".git-credentials", ".kube", ".netrc",
                ".pgpass", ".ssh")  # fmt: skip


def secret_paths(home: Path, workdir: Path) -> list[str]:
    """The existing files and folders to hide from the child: the worker's ``.env`` and its user's credentials."""
    candidates = [workdir / ".env", *(home / name for name in HOME_SECRETS)]
    return [str(path) for path in candidates if path.exists()]


def hide(paths: list[str]) -> None:
    """Inside the new mount namespace: an empty folder over each folder, an empty file over each file."""
    libc = ctypes.CDLL(None, use_errno=True)
    for path in paths:
        if Path(path).is_dir():
            status = libc.mount(b"tmpfs", path.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"size=64k,mode=0700")
        else:
            status = libc.mount(b"/dev/null", path.encode(), None, _MS_BIND, None)
        if status != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, "could not hide it from the sandbox", path)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", ioctl(probe, _SIOCGIFFLAGS, request))[1]
        ioctl(probe, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def _bind_mount(source: Path, target: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(str(source).encode(), str(target).encode(), None, _MS_BIND, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"could not give the sandbox its own {target}", str(target))
