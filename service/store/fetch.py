"""Fetching image URLs with a guard against server-side request forgery.

Only http and https, no credentials in the URL. The host is resolved first and every address it
resolves to must be public: loopback, private (RFC 1918, CGNAT, ULA), link-local, multicast,
reserved, unspecified, documentation and cloud-metadata addresses are refused (IPv4 addresses
embedded in IPv6 ones too) unless ``image_fetch_allow`` lists a matching CIDR or the exact host
name. The connection goes to the checked address (pinned: DNS rebinding cannot swap it), while
the Host header, TLS SNI and certificate verification use the host name. Redirects are followed
by hand, each hop checked again. One deadline covers the whole fetch, and the size cap is
enforced on Content-Length and while streaming.

Error reasons are short and never echo what the server answered.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urljoin, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_REDIRECTS = 3
_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 64 * 1024
USER_AGENT = "recsys-search/image-fetch"

# Cloud metadata endpoints: refused even inside an allowed CIDR, unless listed as a single address.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
    "169.254.170.2",  # AWS ECS task metadata
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",  # Oracle Cloud
    "168.63.129.16",  # Azure wire server (a public address)
))

_DENIED_V4 = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
))
_DENIED_V6 = tuple(ipaddress.ip_network(n) for n in (
    "::/8",  # unspecified, loopback, IPv4-compatible
    "64:ff9b:1::/48",  # local-use NAT64
    "100::/64",  # discard
    "2001::/32",  # Teredo
    "2001:db8::/32",  # documentation
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local (deprecated)
    "ff00::/8",  # multicast
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class FetchError(Exception):
    """An image URL could not be fetched; ``reason`` is safe to show to the client."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class FetchRefused(FetchError):
    """The URL or the address it resolves to is not allowed."""


class FetchTooLarge(FetchRefused):
    """The response is bigger than the size limit."""


class FetchFailed(FetchError):
    """The fetch was allowed but did not succeed (network, timeout, TLS, HTTP status)."""


Resolver = Callable[..., list]


@dataclass(frozen=True)
class FetchPolicy:
    """What the guard allows; build it with :meth:`from_settings`."""

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: frozenset[str] = frozenset()
    timeout_s: float = 10.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = MAX_REDIRECTS
    # CA bundle for https (None = the system's); tests point it at their own CA.
    ca_certs: str | None = None
    # Name resolution (None = socket.getaddrinfo, looked up at call time).
    resolver: Resolver | None = field(default=None, compare=False)

    @classmethod
    def from_settings(cls, settings) -> "FetchPolicy":
        networks, hosts = parse_allow(settings.image_fetch_allow)
        return cls(allow_networks=networks, allow_hosts=hosts, timeout_s=settings.image_fetch_timeout_seconds,
                   max_bytes=int(settings.image_fetch_max_mb * 1024 * 1024))


def parse_allow(entries: Iterable[str]) -> tuple[tuple[IPNetwork, ...], frozenset[str]]:
    """Split ``image_fetch_allow`` into CIDRs (a bare address is a /32 or /128) and host names."""
    networks: list[IPNetwork] = []
    hosts: set[str] = set()
    for entry in entries:
        text = entry.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            hosts.add(_normal_host(text))
    return tuple(networks), frozenset(hosts)


def _normal_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


def denied_reason(ip: IPAddress) -> str | None:
    """Why an address must not be fetched from by default, or None when it is public."""
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.version == 6:
        embedded = ip.ipv4_mapped or ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if embedded is not None:
            inner = denied_reason(embedded)
            return f"{inner} (embedded in IPv6)" if inner else None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private or any(ip in n for n in (_DENIED_V4 if ip.version == 4 else _DENIED_V6)):
        return "a private or reserved address"
    if ip.is_reserved or not ip.is_global:
        return "a reserved address"
    return None


def _unmapped(ip: IPAddress) -> IPAddress:
    return ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped else ip


def check_address(ip: IPAddress, host: str, policy: FetchPolicy) -> None:
    """Refuse ``ip`` (an address ``host`` resolved to) unless it is public or allowed.

    Raises:
        FetchRefused: the address is not public and not allow-listed.
    """
    reason = denied_reason(ip)
    if reason is None:
        return
    plain = _unmapped(ip)
    networks = [n for n in policy.allow_networks if plain in n or ip in n]
    if ip in METADATA_ADDRESSES or plain in METADATA_ADDRESSES:
        # Only an entry naming exactly this address opens a metadata endpoint.
        if any(n.num_addresses == 1 for n in networks):
            return
    elif networks or _normal_host(host) in policy.allow_hosts:
        return
    raise FetchRefused(f"{host} resolves to {reason}: refused (see image_fetch_allow)")


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # as written (lowercased, IDNA-encoded), no brackets
    port: int
    path: str  # path and query


def parse_url(url: str) -> _Target:
    """Check a URL's shape: http(s), a host, no credentials.

    Raises:
        FetchRefused: anything else.
    """
    if not isinstance(url, str) or any(c.isspace() or ord(c) < 32 for c in url):
        raise FetchRefused("not a valid URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchRefused("not a valid URL") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchRefused("only http and https URLs are fetched")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise FetchRefused("URLs with credentials are refused")
    host = parts.hostname
    if not host:
        raise FetchRefused("the URL has no host")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise FetchRefused("the URL's host name is not valid") from exc
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(scheme, host.lower(), port or (443 if scheme == "https" else 80), path)


def resolve(target: _Target, policy: FetchPolicy, deadline: float) -> IPAddress:
    """The checked address to connect to: every address the host resolves to must pass.

    Raises:
        FetchRefused: an address is refused.
        FetchFailed: the name does not resolve (in time).
    """
    try:
        literal = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchFailed("timed out")
        # getaddrinfo has no timeout of its own: wait for it in a helper thread.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-fetch-dns")
        try:
            future = pool.submit(policy.resolver or socket.getaddrinfo, target.host, target.port, type=socket.SOCK_STREAM)
            infos = future.result(timeout=remaining)
        except FutureTimeout as exc:
            raise FetchFailed(f"resolving {target.host} timed out") from exc
        except (OSError, UnicodeError) as exc:
            raise FetchFailed(f"cannot resolve {target.host}") from exc
        finally:
            pool.shutdown(wait=False)
        addresses = []
        for info in infos:
            try:
                addresses.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
            except (ValueError, IndexError, TypeError):
                continue
        if not addresses:
            raise FetchFailed(f"cannot resolve {target.host}")
    # All of them, not just the one we use: a name mixing public and internal addresses is suspect.
    for ip in addresses:
        check_address(ip, target.host, policy)
    return addresses[0]


def _host_header(target: _Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def fetch(url: str, policy: FetchPolicy) -> bytes:
    """GET ``url`` through the guard and return the body.

    Raises:
        FetchRefused: the URL or an address it (or a redirect) leads to is not allowed.
        FetchTooLarge: the body is over ``policy.max_bytes``.
        FetchFailed: network error, timeout, TLS failure, too many redirects, non-200 status.
    """
    deadline = time.monotonic() + policy.timeout_s
    for _hop in range(policy.max_redirects + 1):
        target = parse_url(url)
        ip = resolve(target, policy, deadline)
        status, location, body = _request(target, ip, policy, deadline)
        if status in _REDIRECTS:
            if not location:
                raise FetchFailed(f"HTTP {status} without a Location")
            url = urljoin(url, location)
            continue
        if status != 200:
            raise FetchFailed(f"HTTP {status}")
        return body
    raise FetchFailed(f"more than {policy.max_redirects} redirects")


def _request(target: _Target, ip: IPAddress, policy: FetchPolicy, deadline: float) -> tuple[int, str | None, bytes]:
    """One GET to the pinned address; (status, Location, body); the body only for a 200."""
    import urllib3
    from urllib3.exceptions import HTTPError, ProtocolError, SSLError
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchFailed("timed out")
    timeout = urllib3.Timeout(connect=remaining, read=remaining)
    common = {"port": target.port, "timeout": timeout, "retries": False, "maxsize": 1, "block": False}
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            str(ip), **common, cert_reqs="CERT_REQUIRED", ca_certs=policy.ca_certs,
            # SNI and the certificate check use the name, the socket uses the checked address.
            server_hostname=target.host, assert_hostname=target.host,
        )
    else:
        pool = urllib3.HTTPConnectionPool(str(ip), **common)
    headers = {"Host": _host_header(target), "User-Agent": USER_AGENT, "Accept": "image/*",
               "Accept-Encoding": "identity"}
    try:
        response = pool.urlopen("GET", target.path, headers=headers, redirect=False, retries=False,
                                preload_content=False, decode_content=False, assert_same_host=False)
        try:
            if response.status in _REDIRECTS:
                return response.status, response.headers.get("Location"), b""
            if response.status != 200:
                return response.status, None, b""
            length = response.headers.get("Content-Length")
            if length is not None and length.strip().isdigit() and int(length) > policy.max_bytes:
                raise FetchTooLarge(f"larger than the limit of {policy.max_bytes} bytes")
            return 200, None, _read_body(response, policy.max_bytes, deadline)
        finally:
            response.release_conn()
            response.close()
    except SSLError as exc:
        raise FetchFailed("TLS handshake or certificate verification failed") from exc
    except (Urllib3Timeout, TimeoutError) as exc:
        raise FetchFailed("timed out") from exc
    except (HTTPError, ProtocolError, OSError) as exc:
        raise FetchFailed(f"cannot fetch from {target.host}") from exc
    finally:
        pool.close()


def _read_body(response, max_bytes: int, deadline: float) -> bytes:
    """Stream the body under the size cap and the deadline (a trickling server cannot stall us)."""
    chunks: list[bytes] = []
    total = 0
    sock = getattr(getattr(response, "connection", None), "sock", None)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchFailed("timed out")
        if sock is not None:
            sock.settimeout(remaining)
        chunk = response.read1(_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise FetchTooLarge(f"larger than the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
