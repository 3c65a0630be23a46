"""The secret registry, masking of text and request targets, and the log filter."""

from __future__ import annotations

import io
import logging
import secrets
import threading

import pytest

from coral_server.redaction import MASK, RedactingFilter, SecretRegistry, install, mask_target, mask_values


def agent_secret() -> str:
    return secrets.token_urlsafe(32)


# -- the registry ---------------------------------------------------------------------------------


def test_a_value_stays_registered_while_anyone_holds_it() -> None:
    registry = SecretRegistry()
    shared = "sk-shared-api-key-1234"
    registry.add(shared)
    registry.add(shared)  # two agents given the same API key
    registry.discard(shared)
    assert shared in registry
    assert registry.mask(f"key={shared}") == f"key={MASK}"
    registry.discard(shared)
    assert shared not in registry and len(registry) == 0
    assert registry.mask(f"key={shared}") == f"key={shared}"
    registry.discard(shared)  # releasing what is not held is harmless
    assert len(registry) == 0


def test_too_short_values_are_not_registered() -> None:
    registry = SecretRegistry()
    registry.add("", "abc", "12345")
    assert len(registry) == 0
    assert registry.mask("abc 12345") == "abc 12345"


def test_masks_url_safe_values_wherever_they_sit() -> None:
    registry = SecretRegistry()
    token = agent_secret()
    hex_key = secrets.token_hex(32)
    registry.add(token, hex_key)
    for text, expected in [
        (f"url=http://h/mcp/v1/{token}/mcp", f"url=http://h/mcp/v1/{MASK}/mcp"),
        (f"CORAL_AGENT_SECRET={token}", f"CORAL_AGENT_SECRET={MASK}"),
        (f"inside a longer run: x{token}_y", f"inside a longer run: x{MASK}_y"),
        (f"percent-encoded after: %2F{token}", f"percent-encoded after: %2F{MASK}"),
        (f"{hex_key}{token}", f"{MASK}{MASK}"),
        (f"twice {token} and {token}", f"twice {MASK} and {MASK}"),
    ]:
        assert registry.mask(text) == expected


def test_masks_values_with_other_characters_and_longer_values_first() -> None:
    registry = SecretRegistry()
    phrase = "correct horse: battery!"
    inner = "abcdefgh"
    registry.add(phrase, inner, f"{inner}-and-more")
    assert registry.mask(f"pw={phrase}.") == f"pw={MASK}."
    assert registry.mask(f"[{inner}-and-more] [{inner}]") == f"[{MASK}] [{MASK}]"


def test_unmatched_text_is_returned_as_is() -> None:
    registry = SecretRegistry()
    registry.add(agent_secret(), "a phrase with spaces")
    text = "session.created session=3f2a1c0e-1111-2222-3333-444455556666 agents=echo-a,echo-b"
    assert registry.mask(text) is text


def test_many_secrets_of_one_length_cost_one_scan() -> None:
    registry = SecretRegistry()
    many = [agent_secret() for _ in range(2000)]
    registry.add(*many)
    assert registry.mask(f"GET /mcp/v1/{many[1234]}/mcp") == f"GET /mcp/v1/{MASK}/mcp"
    registry.discard(*many)
    assert len(registry) == 0 and registry.mask(many[0]) == many[0]


def test_registering_from_threads_while_masking() -> None:
    registry = SecretRegistry()
    stable = agent_secret()
    registry.add(stable)
    failures: list[BaseException] = []

    def churn() -> None:
        try:
            for _ in range(300):
                batch = [agent_secret() for _ in range(5)] + [f"x y {secrets.token_hex(4)}"]
                registry.add(*batch)
                registry.discard(*batch)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(3)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        assert registry.mask(f"/mcp/v1/{stable}/mcp") == f"/mcp/v1/{MASK}/mcp"
    for t in threads:
        t.join()
    assert not failures and len(registry) == 1


def test_mask_values_masks_short_values_too() -> None:
    # An agent's own output: its secret option values whatever their length, in the order given.
    assert mask_values("pin=42 pin2=4242", ["4242", "42"]) == f"pin={MASK} pin2={MASK}"
    assert mask_values("nothing here", ["", "x!"]) == "nothing here"


# -- request targets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/mcp/v1/{s}/mcp",
        "/mcp/v1/{s}/sse/",
        "/mcp/v1/{s}/sse/messages/?session_id=abc",
        "/mcp/v1/{s}/devmode/sse?agentId=me&agentDescription=hi",
        "/mcp/v1/{s}",
        "/mcp/v1/{s}/no/such/route",
        "/%6Dcp/v1/{s}/mcp",  # aiohttp decodes the path before routing: so do we
        "/MCP/V1/{s}/mcp",
        "http://127.0.0.1:5555/mcp/v1/{s}/mcp",  # absolute-form request target
    ],
)
def test_the_segment_after_mcp_v1_is_masked_registered_or_not(target: str) -> None:
    secret = agent_secret()  # expired or mistyped secrets are not registered, and still masked
    masked = mask_target(target.format(s=secret), SecretRegistry())
    assert secret not in masked
    assert masked == target.format(s=MASK)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("token=K", "token=***"),
        ("after=3&token=K&types=a,b", "after=3&token=***&types=a,b"),
        ("%74oken=K", "%74oken=***"),  # the server decodes parameter names: so do we
        (
            "access_token=K&api_key=K&apiKey=K&x-secret=K&password=K",
            "access_token=***&api_key=***&apiKey=***&x-secret=***&password=***",
        ),
        ("Authorization=Bearer+K&sig=1&signature=K", "Authorization=***&sig=1&signature=***"),
        ("token&token=", "token&token=***"),  # a bare name has no value to hide
        ("after=3&types=message_sent&tail=10&agentId=me&session_id=ab", None),
    ],
)
def test_credential_named_query_parameters_are_masked(query: str, expected: str | None) -> None:
    masked = mask_target(f"/api/v1/events/ns/sid?{query}", SecretRegistry())
    assert masked == f"/api/v1/events/ns/sid?{expected if expected is not None else query}"


def test_registered_values_are_masked_in_any_segment_or_parameter() -> None:
    registry = SecretRegistry()
    key = agent_secret()
    phrase = "pass phrase!"
    registry.add(key, phrase)
    assert mask_target(f"/api/v1/x/{key}/y", registry) == f"/api/v1/x/{MASK}/y"
    assert mask_target("/api/v1/x?q=pass+phrase%21&after=1", registry) == f"/api/v1/x?q={MASK}&after=1"
    assert mask_target(f"/api/v1/x?{key}", registry) == f"/api/v1/x?{MASK}"
    assert mask_target("/api/v1/session/ns/sid?after=3", registry) == "/api/v1/session/ns/sid?after=3"


# -- the log filter -------------------------------------------------------------------------------


@pytest.fixture
def logged() -> tuple[logging.Logger, io.StringIO, SecretRegistry]:
    registry = SecretRegistry()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logger = logging.getLogger(f"test_redaction.{secrets.token_hex(4)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    install(logger, registry)
    install(logger, registry)  # idempotent
    assert len(handler.filters) == 1
    return logger, out, registry


def test_filter_masks_the_final_message_traceback_and_stack(
    logged: tuple[logging.Logger, io.StringIO, SecretRegistry],
) -> None:
    logger, out, registry = logged
    key, phrase = agent_secret(), "hunter2 and more"
    registry.add(key, phrase)
    logger.info("agent.env url=%s extra=%r", f"http://h/mcp/v1/{key}/mcp", {"pw": phrase})
    try:
        raise ValueError(f"cannot use {key}")
    except ValueError:
        logger.exception("launch.failed secret=%s", key)
    logger.warning("where am I %s", phrase, stack_info=True)
    text = out.getvalue()
    assert key not in text and phrase not in text
    assert f"url=http://h/mcp/v1/{MASK}/mcp" in text
    assert f"ValueError: cannot use {MASK}" in text
    assert "Stack (most recent call last)" in text


def test_filter_leaves_marked_and_clean_records_alone(
    logged: tuple[logging.Logger, io.StringIO, SecretRegistry],
) -> None:
    logger, out, registry = logged
    logger.info("before any secret: %s", "plain")
    secret = agent_secret()
    registry.add(secret)
    # The access log masks its line by shape while building it and marks it so; no rescan.
    logger.info("marked %s", secret, extra={"redacted": True})
    logger.info("clean %s", "line")
    assert out.getvalue().splitlines() == [
        f"{logger.name} before any secret: plain",
        f"{logger.name} marked {secret}",
        f"{logger.name} clean line",
    ]


def test_a_broken_format_is_left_for_the_handler_to_report() -> None:
    registry = SecretRegistry()
    registry.add(agent_secret())
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "broken %s %s", ("one",), None)
    assert RedactingFilter(registry).filter(record) is True
    assert (record.msg, record.args) == ("broken %s %s", ("one",))
