"""The webhook destination policy: rules, URLs, resolution (real, through /etc/hosts) and the guard."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from coral_server.webhooks.destinations import (
    DENY_SETTING,
    PRIVATE_SETTING,
    DestinationDenied,
    DestinationPolicy,
    parse_rule,
)
from coral_server.webhooks.guard import GuardedResolver

STRICT = DestinationPolicy(private=False)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://127.9.9.9/", "loopback"),
        ("http://[::1]:5555/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),  # IPv4-mapped IPv6 is the IPv4 address
        ("http://10.1.2.3/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://100.64.0.1/", "private"),  # carrier-grade NAT: not global
        ("http://[fd00::1]/", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),  # cloud metadata
        ("http://[fe80::1]/", "link-local"),
        ("http://0.0.0.0:22/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
    ],
)
def test_internal_literals_are_refused_by_a_strict_policy(url: str, kind: str) -> None:
    problem = STRICT.url_problem(url)
    assert problem is not None and kind in problem and PRIVATE_SETTING in problem
    assert DestinationPolicy(private=True).url_problem(url) is None  # development mode


@pytest.mark.parametrize(
    "url", ["https://93.184.216.34/hook", "http://[2606:4700::1111]/", "https://hooks.example.com/x"]
)
def test_public_destinations_pass_without_resolving(url: str) -> None:
    assert STRICT.url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "fragment"),
    [("ftp://example.com/", "http(s)"), ("http:///nohost", "http(s)"), ("http://h:99999/", "valid URL")],
)
def test_malformed_urls_are_refused(url: str, fragment: str) -> None:
    problem = DestinationPolicy().url_problem(url)
    assert problem is not None and fragment in problem


def test_deny_wins_over_allow_which_wins_over_the_private_rule() -> None:
    policy = DestinationPolicy.configured(
        "deny", ["10.0.0.0/8", "*.corp.example", "127.0.0.1"], ["10.0.0.66", "bad.corp.example"],
        has_auth_keys=False,
    )  # fmt: skip
    assert policy.url_problem("http://10.2.3.4/") is None
    assert policy.url_problem("http://127.0.0.1:9/") is None
    assert policy.url_problem("http://[::1]/") is not None  # only what is listed
    assert DENY_SETTING in (policy.url_problem("http://10.0.0.66/") or "")
    assert DENY_SETTING in (policy.url_problem("http://BAD.corp.example./") or "")
    # A listed name is allowed whatever it resolves to; a deny-listed name is refused by name.
    assert policy.address_problem("a.corp.example", ipaddress.ip_address("192.168.0.7")) is None
    assert (
        policy.address_problem("corp.example", ipaddress.ip_address("192.168.0.7")) is not None
    )  # not a subdomain


def test_auto_refuses_internal_destinations_only_with_auth_keys() -> None:
    assert DestinationPolicy.configured("auto", [], [], has_auth_keys=False).private
    assert not DestinationPolicy.configured("auto", [], [], has_auth_keys=True).private
    assert DestinationPolicy.configured("allow", [], [], has_auth_keys=True).private
    assert not DestinationPolicy.configured("deny", [], [], has_auth_keys=False).private


@pytest.mark.parametrize("entry", ["", "a b", "exa mple.com", "http://x", "x/y", "*."])
def test_bad_rules(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_rule(entry)


async def test_request_time_check_resolves_host_names() -> None:
    # localhost, 127.1 and 0x7f.0.0.1 resolve to loopback without DNS (hosts file, inet_aton).
    for url in ("http://localhost:8080/hook", "http://127.1/", "http://0x7f.0.0.1/"):
        problem = await STRICT.check(url)
        assert problem is not None and "loopback" in problem, url
        assert await DestinationPolicy(private=True).check(url) is None
    allowed = DestinationPolicy(private=False, allow=(parse_rule("localhost"),))
    assert await allowed.check("http://localhost:8080/hook") is None
    # A name that does not resolve passes now: every connection is checked again.
    assert await STRICT.check("http://no-such-host.invalid/") is None


class Answers(AbstractResolver):
    """What DNS answers, as a test sets it (stands where a real name server would)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self.addresses
        ]

    async def close(self) -> None:
        return None


async def test_the_guard_checks_every_resolution() -> None:
    dns = Answers("93.184.216.34")
    guard = GuardedResolver(STRICT, dns)
    assert [r["host"] for r in await guard.resolve("hooks.example.com", 443)] == ["93.184.216.34"]
    dns.addresses = ["127.0.0.1"]  # the name now points inside (DNS rebinding)
    with pytest.raises(DestinationDenied, match=r"hooks\.example\.com \(127\.0\.0\.1\) is a loopback"):
        await guard.resolve("hooks.example.com", 443)
    dns.addresses = ["10.0.0.1", "93.184.216.34"]  # only the allowed address is connected to
    assert [r["host"] for r in await guard.resolve("hooks.example.com", 443)] == ["93.184.216.34"]
    open_guard = GuardedResolver(DestinationPolicy(private=True), Answers("127.0.0.1"))
    assert len(await open_guard.resolve("anything", 80)) == 1
