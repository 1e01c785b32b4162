"""The HTTP rules model downloads (`model/assets/download.py`) and URL inputs (`inputs.py`) share.

Both wait at most $PADDLEHUB_VIDEO_TIMEOUT seconds for data and $PADDLEHUB_VIDEO_DEADLINE in all
(`transfer_deadline`: default a minute plus the size limit at 100 kB/s; both read by
environment.py), and spell out why a transfer failed (`reason`).

URL inputs also go through `get`: redirects followed by hand (only to http and https, at most
MAX_REDIRECTS), and, under a `HostPolicy` (`hub serving`), every host checked against the
operator's list and every address a name resolves to checked before it is connected to; the socket
is connected to the address that was checked, so a DNS answer that changes between the check and the
connection (rebinding) is never used.
"""
from __future__ import annotations

import base64
import http.client
import ipaddress
import socket
import urllib.error
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlsplit

from . import environment

# The names only: environment.py reads and checks them (ENV_TIMEOUT is named in `reason`'s advice).
ENV_TIMEOUT, ENV_DEADLINE = environment.TIMEOUT, environment.DEADLINE
# The default deadline of a transfer: a minute, plus its size limit at this rate.
_DEADLINE_BASE_S = 60.0
_SLOWEST_RATE = 100_000  # bytes per second
HTTP_SCHEMES = ("http", "https")
MAX_REDIRECTS = 10
_REDIRECTS = (301, 302, 303, 307, 308)
_USER_AGENT = "paddlehub-video/1"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def transfer_deadline(max_bytes: int, asked: float | None = None) -> float:
    """Seconds one transfer may take in all: `asked` ($PADDLEHUB_VIDEO_DEADLINE), else a minute plus
    `max_bytes` at 100 kB/s."""
    return asked if asked is not None else _DEADLINE_BASE_S + max_bytes / _SLOWEST_RATE


def reason(exc: BaseException, timeout: float) -> str:
    """Readable cause of a network failure, spelling out timeouts."""
    cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(cause, (socket.timeout, TimeoutError)):
        return (f"timed out: no data for {timeout:g} s (raise {ENV_TIMEOUT} to wait longer "
                f"on a slow connection)")
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return str(cause)


class Refused(Exception):
    """A URL this process will not fetch (its scheme, its host, an address, a redirect); the message says why."""


@dataclass(frozen=True)
class HostPolicy:
    """The hosts URLs may come from (`hub serving`): names, addresses and networks an operator listed.

    A URL's host must be a listed name (`*`: any name), or an address inside a listed network (an
    address is a one-address network). Whatever the name, every address it resolves to must be a
    public one (`ipaddress`'s `is_global`) or lie in a listed network: loopback, link-local,
    private and reserved addresses are used only when named. `setting` names where the list came from.
    """

    names: frozenset[str]
    networks: tuple[Network, ...]
    setting: str

    @classmethod
    def from_entries(cls, entries: Iterable[str], setting: str) -> HostPolicy:
        """The policy of entries as `environment.url_hosts` checked them: `videos.example.com`, `*`,
        `10.0.0.7`, `10.1.0.0/16`."""
        names, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry)
        return cls(frozenset(names), tuple(networks), setting)

    def check_host(self, host: str) -> None:
        """Refused unless `host` (a URL's) is listed."""
        address = _address(host)
        if address is not None:
            if not self._listed(address):
                raise Refused(f"the host {host} is not in {self.setting}")
        elif "*" not in self.names and host.lower().rstrip(".") not in self.names:
            raise Refused(f"the host {host} is not in {self.setting}")

    def check_address(self, host: str, address: Address) -> None:
        """Refused if `address`, which `host` resolved to, is not public and not listed."""
        if _public(address) or self._listed(address):
            return
        raise Refused(f"{host} resolves to {address}, a {_kind(address)} address, used only when "
                      f"{self.setting} names it (or a network holding it)")

    def _listed(self, address: Address) -> bool:
        mapped = getattr(address, "ipv4_mapped", None)
        return any(address in network or (mapped is not None and mapped in network) for network in self.networks)


def _address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


def _public(address: Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_global and not (mapped or address).is_multicast


def _kind(address: Address) -> str:
    address = getattr(address, "ipv4_mapped", None) or address
    for kind in ("loopback", "link_local", "private", "multicast", "reserved", "unspecified"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"


def _checked_socket(host: str, port: int, timeout: float, policy: HostPolicy | None) -> socket.socket:
    """A socket connected to an address of `host` that `policy` allows (the one checked, not a new lookup)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    refusal: Refused | None = None
    failure: OSError | None = None
    for family, kind, proto, _, address in infos:
        if policy is not None:
            try:
                policy.check_address(host, ipaddress.ip_address(address[0].split("%")[0]))
            except Refused as exc:
                refusal = exc
                continue
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            failure = exc
    if failure is not None:
        raise failure
    raise refusal or OSError(f"no address found for {host}")


class _HTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int | None, timeout: float, policy: HostPolicy | None):
        super().__init__(host, port, timeout=timeout)
        self.policy = policy

    def connect(self) -> None:
        self.sock = _checked_socket(self.host, self.port, self.timeout, self.policy)


class _HTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None, timeout: float, policy: HostPolicy | None):
        super().__init__(host, port, timeout=timeout)
        self.policy = policy

    def connect(self) -> None:
        sock = _checked_socket(self.host, self.port, self.timeout, self.policy)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class HTTPStatusError(Exception):
    """The server answered with an error status (the message: `HTTP 404 Not Found`)."""


def get(url: str, timeout: float, policy: HostPolicy | None = None,
        headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    """GET `url`, following redirects to http and https only; the response of status 2xx (close it).

    Refused (scheme, host, address, redirect), HTTPStatusError, or OSError / HTTPException on a
    network failure. Credentials in the URL are sent as basic authentication to its own host only.
    """
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme.lower() not in HTTP_SCHEMES:
            raise Refused(f"redirected to a {parts.scheme}: URL; only http and https are followed")
        if not parts.hostname:
            raise Refused("the URL names no host")
        if policy is not None:
            policy.check_host(parts.hostname)
        secure = parts.scheme.lower() == "https"
        # The port always given: http.client would read the end of an IPv6 address as one.
        connection = (_HTTPS if secure else _HTTP)(parts.hostname, parts.port or (443 if secure else 80),
                                                   timeout, policy)
        # One request per connection: closing the response then closes the socket.
        sent = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity", "Connection": "close", **(headers or {})}
        if parts.username is not None:
            login = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            sent["Authorization"] = "Basic " + base64.b64encode(login).decode("ascii")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", target, headers=sent)
            response = connection.getresponse()
        except BaseException:
            connection.close()
            raise
        if response.status in _REDIRECTS and response.getheader("Location"):
            url = urljoin(url, response.getheader("Location", ""))
            connection.close()
            continue
        if not 200 <= response.status < 300:
            connection.close()
            raise HTTPStatusError(f"HTTP {response.status} {response.reason}")
        return response
    raise Refused(f"more than {MAX_REDIRECTS} redirects")
