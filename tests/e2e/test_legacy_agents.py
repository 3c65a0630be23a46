"""Agents written for earlier generations of the reference server, unmodified, through a running server.

Each legacy agent is a fixture written in its generation's style (manifest format, tool and resource
names, transport, environment; `tests/fixtures/registry/legacy-*`), its model a scripted
`FakeOpenAI` on loopback. It holds a mentioned conversation with a current-style agent (the test,
through the official MCP client) in the same session, and the session state shows the conversation.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from coral_server.agent import CoralAgent
from tests.conftest import Coral, agent_spec, session_body
from tests.e2e.mcp_client import connect
from tests.fakes.openai import FakeOpenAI, Step, last_tool_result_json, tool_results

HOLD = {"mode": "hold_after_exit", "duration": 10_000}
API_KEY = "sk-legacy-test"

TODAY = {
    "coral_create_thread",
    "coral_add_participant",
    "coral_remove_participant",
    "coral_close_thread",
    "coral_send_message",
    "coral_wait_for_message",
    "coral_wait_for_mention",
    "coral_wait_for_agent",
}
V1 = {
    "coral_list_agents",
    "coral_create_thread",
    "coral_add_participant",
    "coral_remove_participant",
    "coral_close_thread",
    "coral_send_message",
    "coral_wait_for_mentions",
}
UNPREFIXED = {name.removeprefix("coral_") for name in V1}
DEVMODE = V1 | UNPREFIXED  # what CORAL_SSE_URL readers get: 1.0 agents grown from devmode ones read it too


def current_agent() -> dict[str, Any]:
    """The current-style agent: run by the test (runtime external), today's surface."""
    return agent_spec("tester", runtime="external", description="The app's own agent")


async def exited(coral: Coral, ns: str, sid: str, name: str) -> dict[str, Any]:
    """The agent's state once it has exited (the session holds its state after the last exit)."""

    def done(state: dict[str, Any]) -> bool:
        return any(a["name"] == name and a["status"] == "exited" for a in state["agents"])

    state = await coral.wait_for(ns, sid, done, timeout=30)
    return next(a for a in state["agents"] if a["name"] == name)


async def stderr_of(coral: Coral, ns: str, sid: str, name: str) -> list[str]:
    status, logs = await coral.request("GET", f"/api/v1/local/session/{ns}/{sid}/agents/{name}/logs")
    assert status == 200, logs
    return [line["text"] for line in logs["lines"] if line["stream"] == "stderr"]


def _messages(state: dict[str, Any], thread_name: str) -> list[tuple[str, str, list[str]]]:
    [thread] = [t for t in state["threads"] if t["name"] == thread_name]
    return [(m["senderName"], m["text"], m["mentionNames"]) for m in thread["messages"]]


@pytest.mark.parametrize(
    "tail",
    ["mcp", "sse/", "sse?agentId=tester", "devmode/sse", "devmode/sse/?agentId=tester&agentDescription=x"],
)
async def test_a_current_agent_sees_only_todays_surface_on_every_route(coral: Coral, tail: str) -> None:
    ns, sid = await coral.create_session(session_body([current_agent()], namespace="legacy"))
    base = (await coral.connection_url(ns, sid, "tester")).rsplit("/", 1)[0]
    async with connect(f"{base}/{tail}") as me:
        assert {t.name for t in (await me.session.list_tools()).tools} == TODAY
        resources = {str(r.uri) for r in (await me.session.list_resources()).resources}
        assert resources == {"coral://instruction", "coral://state"}
    [state] = (await coral.state(ns, sid))["agents"]
    assert (state["generation"], state["description"]) == ("current", "The app's own agent")


# -- 1.0: Coral's agent template (late 2025) ----------------------------------------------------------


class V1Model:
    """The 1.0 agent's model: find `tester`, greet it in a new thread, wait, thank it for the answer."""

    def __init__(self) -> None:
        self.thread_id = ""

    def script(self) -> list[Step]:
        return [self.list_agents, self.create_thread, self.greet, self.wait, self.thank, lambda r: "done"]

    def list_agents(self, request: dict[str, Any]) -> Any:
        return [("coral_list_agents", {"includeDetails": True})]

    def create_thread(self, request: dict[str, Any]) -> Any:
        result = last_tool_result_json(request)
        assert result["result"] == "agent_list_success_with_details", result
        assert [(a["id"], a["description"]) for a in result["agents"]] == [("tester", "The app's own agent")]
        return [("coral_create_thread", {"threadName": "greetings", "participantIds": ["tester"]})]

    def greet(self, request: dict[str, Any]) -> Any:
        result = last_tool_result_json(request)
        assert result["result"] == "create_thread_success", result
        assert result["thread"]["participants"] == ["v1", "tester"] and result["thread"]["isClosed"] is False
        self.thread_id = result["thread"]["id"]
        message = {"threadId": self.thread_id, "content": "hello from 1.0", "mentions": ["tester"]}
        return [("coral_send_message", message)]

    def wait(self, request: dict[str, Any]) -> Any:
        result = last_tool_result_json(request)
        assert result["result"] == "send_message_success", result
        assert result["message"]["senderId"] == "v1" and result["message"]["mentions"] == ["tester"]
        return [("coral_wait_for_mentions", {"timeoutMs": 20_000})]

    def thank(self, request: dict[str, Any]) -> Any:
        result = last_tool_result_json(request)
        assert result["result"] == "wait_for_mentions_success", result
        [answer] = result["messages"]
        assert (answer["threadId"], answer["threadName"]) == (self.thread_id, "greetings")
        message = {
            "threadId": answer["threadId"],
            "content": f"thanks: {answer['content']}",
            "mentions": [answer["senderId"]],
        }
        return [("coral_send_message", message)]


@pytest.mark.parametrize(
    ("manifest", "route", "offered"),
    [
        ("legacy-v1", "path_end=sse query=agentId", V1),  # CORAL_CONNECTION_URL, SSE
        ("legacy-v1-http", "path_end=mcp query=", V1),  # CORAL_CONNECTION_URL, streamable HTTP
        ("legacy-v1-sse-url", "path_end=sse query=agentId", DEVMODE),  # CORAL_SSE_URL + ?agentId=
    ],
)
async def test_v1_agent_converses_with_a_current_agent(
    coral: Coral, manifest: str, route: str, offered: set[str]
) -> None:
    model = V1Model()
    async with FakeOpenAI(model.script()) as fake:
        v1 = agent_spec(
            "v1",
            registry_name=manifest,
            options={
                "SYSTEM_PROMPT": {"type": "string", "value": "Be polite."},
                "MODEL_API_KEY": {"type": "string", "value": API_KEY},
                "MODEL_BASE_URL": {"type": "string", "value": fake.base_url},
                "MAX_ITERATIONS": {"type": "number", "value": 6},
            },
        )
        ns, sid = await coral.create_session(
            session_body([v1, current_agent()], namespace="legacy", persistenceMode=HOLD)
        )
        async with CoralAgent(await coral.connection_url(ns, sid, "tester"), "tester") as me:
            assert {t.name for t in await me.tools()} == TODAY  # no legacy tool, none doubled
            hello = await me.wait_for_mention(30_000)
            assert hello is not None, "the 1.0 agent never greeted"
            assert (hello["senderName"], hello["text"]) == ("v1", "hello from 1.0")
            await me.send_message(hello["threadId"], "hi 1.0", ["v1"])
            thanks = await me.wait_for_mention(30_000)
            assert thanks is not None and (thanks["senderName"], thanks["text"]) == ("v1", "thanks: hi 1.0")

        agent = await exited(coral, ns, sid, "v1")
        stderr = await stderr_of(coral, ns, sid, "v1")
        assert agent["exitCode"] == 0, stderr
        assert not fake.errors, fake.errors
        assert f"orchestrated: runtime=executable claims=0 {route}" in stderr

        # the model saw the 1.0 tools, and the defaults of the options the request left out
        first = fake.requests[0]
        assert set(first.tool_names) == offered
        assert (first.json["model"], first.json["temperature"]) == ("gpt-4.1-mini", 0.2)
        # the resources were read before every call: the instruction, then the threads as XML
        system = [r.messages[0]["content"] for r in fake.requests]
        assert all("coral_wait_for_mentions" in s and "Be polite." in s for s in system)
        assert "<threads" in system[0] and "greetings" not in system[0]
        assert "hello from 1.0" in system[3]
        assert "hi 1.0" in system[4]

        state = await coral.state(ns, sid)
        assert {a["name"]: a["generation"] for a in state["agents"]} == {"v1": "1.0", "tester": "current"}
        assert _messages(state, "greetings") == [
            ("v1", "hello from 1.0", ["tester"]),
            ("tester", "hi 1.0", ["v1"]),
            ("v1", "thanks: hi 1.0", ["tester"]),
        ]


# -- devmode: agents from before coral-server 1.0 -----------------------------------------------------


def devmode_model() -> list[Step]:
    """List the agents, wait for a mention (XML), answer it in its thread, then say done."""

    def list_agents(request: dict[str, Any]) -> Any:
        return [("list_agents", {"includeDetails": True})]

    def wait(request: dict[str, Any]) -> Any:
        listing = tool_results(request)[-1]
        assert listing == "Registered Agents (1):\nID: tester, Description: The app's own agent", listing
        return [("wait_for_mentions", {"timeoutMs": 20_000})]

    def answer(request: dict[str, Any]) -> Any:
        found = ET.fromstring(tool_results(request)[-1]).find(".//ResolvedMessage")
        assert found is not None
        reply = {"threadId": found.get("threadId"), "content": "4", "mentions": [found.get("senderId")]}
        assert found.get("content") == "what is 2+2?"
        return [("send_message", reply)]

    def finish(request: dict[str, Any]) -> Any:
        assert tool_results(request)[-1].startswith("Message sent successfully:\nID: ")
        return "The answer was sent."

    return [list_agents, wait, answer, finish]


async def test_devmode_agent_converses_with_a_current_agent(coral: Coral) -> None:
    async with FakeOpenAI(devmode_model()) as fake:
        dev = agent_spec(
            "dev",
            registry_name="legacy-devmode",
            version="0.0.1",
            options={
                "MODEL_API_KEY": {"type": "string", "value": API_KEY},
                "MODEL_BASE_URL": {"type": "string", "value": fake.base_url},
            },
        )
        ns, sid = await coral.create_session(
            session_body([dev, current_agent()], namespace="legacy", persistenceMode=HOLD)
        )
        async with CoralAgent(await coral.connection_url(ns, sid, "tester"), "tester") as me:
            assert {t.name for t in await me.tools()} == TODAY
            thread = await me.create_thread("arithmetic", ["dev"])
            await me.send_message(thread["id"], "what is 2+2?", ["dev"])
            answer = await me.wait_for_mention(30_000)
            assert answer is not None and (answer["senderName"], answer["text"]) == ("dev", "4")

        agent = await exited(coral, ns, sid, "dev")
        stderr = await stderr_of(coral, ns, sid, "dev")
        assert agent["exitCode"] == 0, stderr
        assert not fake.errors, fake.errors
        assert set(fake.requests[0].tool_names) == DEVMODE
        assert fake.requests[0].json["model"] == "gpt-4.1"  # the manifest's default, exported

        state = await coral.state(ns, sid)
        # the manifest has no description: the one the agent sent in its URL fills it
        [described] = [a for a in state["agents"] if a["name"] == "dev"]
        assert described["description"] == "Devmode agent: answers questions that mention it."
        assert described["generation"] == "1.0"  # the manifest's; its URL chose the devmode surface
        assert _messages(state, "arithmetic") == [
            ("tester", "what is 2+2?", ["dev"]),
            ("dev", "4", ["tester"]),
        ]
