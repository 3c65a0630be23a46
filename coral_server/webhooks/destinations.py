"""Where outgoing webhooks and custom tool calls may go: the destination policy and its checks.

A URL an app gives us (a session-end webhook, a custom tool, a job's status webhook) makes this
server send requests from inside its network; unchecked, it can reach loopback services, private
ranges and cloud metadata addresses, and the deliveries API shows what answered (port probing).

The policy is checked when the URL is given (`check`, which resolves host names) and again on
every connection: `webhooks.guard.GuardedResolver` filters the addresses a host name resolves to,
so a name that resolves differently later (DNS rebinding) still cannot reach a denied address, and
`url_problem` covers IP literals, which HTTP clients connect to without resolving. (No HTTP here:
the session and job domains check requests with it.)
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PrivateMode = Literal["auto", "allow", "deny"]

# The setting names the messages point at (TOML keys; flags and variables are in the README).
PRIVATE_SETTING = "webhooks.privateDestinations"
ALLOW_SETTING = "webhooks.allowDestinations"
DENY_SETTING = "webhooks.denyDestinations"
# How long the request-time check waits for a host name to resolve; a name that does not resolve
# in time (or at all) is let through: every connection is checked again anyway.
RESOLVE_TIMEOUT_S = 5.0


class DestinationDenied(OSError):
    """A destination the policy refuses (an OSError: HTTP clients report it as a connection error)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry of an allow or deny list: an address range or a host name (`*.` for subdomains)."""

    network: IPNetwork | None = None
    host: str | None = None
    subdomains: bool = False

    def matches(self, hostname: str, address: IPAddress | None) -> bool:
        if self.network is not None:
            return address is not None and _plain(address) in self.network
        assert self.host is not None
        name = hostname.lower().rstrip(".")
        if self.subdomains:
            return name.endswith("." + self.host)
        return name == self.host


def parse_rule(entry: str) -> Rule:
    """An IP address, a CIDR range, a host name or `*.domain`; ValueError when it is none of them."""
    text = entry.strip().lower().rstrip(".")
    if not text:
        raise ValueError("an empty destination")
    try:
        return Rule(network=ipaddress.ip_network(text, strict=False))
    except ValueError:
        pass
    subdomains = text.startswith("*.")
    host = text[2:] if subdomains else text
    labels = host.split(".")
    if not all(label and len(label) <= 63 and _is_label(label) for label in labels):
        raise ValueError(f"{entry!r} is not an IP address, a CIDR range or a host name")
    return Rule(host=host, subdomains=subdomains)


def parse_rules(entries: Iterable[str]) -> tuple[Rule, ...]:
    return tuple(parse_rule(e) for e in entries)


def _is_label(label: str) -> bool:
    return all(c.isascii() and (c.isalnum() or c in "-_") for c in label)


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address as the IPv4 address it is (::ffff:127.0.0.1 is loopback)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _kind(address: IPAddress) -> str | None:
    """What makes an address internal (loopback, private...), or None for a public one."""
    address = _plain(address)
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private or not address.is_global:
        return "a private or reserved address"
    return None


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """Which hosts outgoing requests may reach. Deny rules win, then allow rules, then the private
    rule: loopback, private, link-local and other non-global addresses only when `private` is on."""

    private: bool = True
    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()

    @classmethod
    def configured(
        cls, mode: PrivateMode, allow: Iterable[str], deny: Iterable[str], *, has_auth_keys: bool
    ) -> DestinationPolicy:
        """The policy of the settings: `auto` allows internal addresses only on a server without
        auth keys (development mode), since any client of an open server can act as it anyway."""
        private = mode == "allow" or (mode == "auto" and not has_auth_keys)
        return cls(private=private, allow=parse_rules(allow), deny=parse_rules(deny))

    @property
    def open(self) -> bool:
        """Everything is allowed: no check needs to resolve anything."""
        return self.private and not self.deny

    def address_problem(self, hostname: str, address: IPAddress | None) -> str | None:
        """Why `hostname` (at `address`, if known) may not be reached, or None."""
        shown = hostname if address is None or str(address) == hostname else f"{hostname} ({address})"
        if any(rule.matches(hostname, address) for rule in self.deny):
            return f"{shown} is denied by {DENY_SETTING}"
        if any(rule.matches(hostname, address) for rule in self.allow):
            return None
        kind = None if address is None or self.private else _kind(address)
        if kind is not None:
            return (
                f"{shown} is {kind}; internal destinations are refused on a server with auth keys "
                f'(list it in {ALLOW_SETTING}, or set {PRIVATE_SETTING} = "allow")'
            )
        return None

    def url_problem(self, url: str) -> str | None:
        """What is wrong with `url` as a destination without resolving anything: its scheme, its
        host, and the host itself when it is an IP literal or a listed name."""
        try:
            parts = urlsplit(url)
            hostname = parts.hostname
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            return f"not a valid URL ({exc})"
        if parts.scheme not in ("http", "https") or not hostname:
            return "must be an http(s) URL with a host"
        return self.address_problem(hostname, literal_address(hostname))

    async def check(self, url: str) -> str | None:
        """`url_problem`, then the addresses its host name resolves to now (a request-time check)."""
        problem = self.url_problem(url)
        if problem is not None or self.open:
            return problem
        hostname = urlsplit(url).hostname or ""
        if literal_address(hostname) is not None:
            return None
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                infos = await asyncio.get_running_loop().getaddrinfo(hostname, None, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            return None  # unresolvable now; its connections are checked when they are made
        for info in infos:
            address = literal_address(str(info[4][0]))
            problem = self.address_problem(hostname, address)
            if problem is not None:
                return problem
        return None
