"""The MCP surface of each generation (coral_server.mcp.generations), on a real session (not launched)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mcp.types as types
import pytest

from coral_server.mcp.generations import SURFACES, surface_for
from coral_server.mcp.request_waits import RequestWaits
from coral_server.mcp.surface import Caller, call_tool, list_resources, list_tools, read_resource
from coral_server.registry import AgentManifest, Generation
from coral_server.sessions import Session, SessionAgent
from tests.mcp.sessions import unlaunched_session

TODAY = [
    "coral_create_thread",
    "coral_add_participant",
    "coral_remove_participant",
    "coral_close_thread",
    "coral_send_message",
    "coral_wait_for_message",
    "coral_wait_for_mention",
    "coral_wait_for_agent",
]
V1 = [
    "coral_list_agents",
    "coral_create_thread",
    "coral_add_participant",
    "coral_remove_participant",
    "coral_close_thread",
    "coral_send_message",
    "coral_wait_for_mentions",
]

MakeCaller = Callable[..., Caller]


@pytest.fixture
def session(tmp_path: Path) -> Session:
    """Agents `a` (today's), `b` (1.0) and `c` (not linked to `a`), all linked as a-b, b-c."""

    def make(manifest: AgentManifest) -> list[SessionAgent]:
        agents = [
            SessionAgent("a", manifest, "external", "Agent A", "sa"),
            SessionAgent("b", manifest, "executable", "Agent B", "sb", generation=Generation.V1),
            SessionAgent("c", manifest, "executable", "", "sc", generation=Generation.V1),
        ]
        agents[0].links, agents[1].links, agents[2].links = {"b"}, {"a", "c"}, {"b"}
        return agents

    return unlaunched_session(tmp_path, make)


@pytest.fixture
def caller(session: Session) -> MakeCaller:
    def make(name: str, generation: Generation) -> Caller:
        return Caller(session, session.agents[name], 2_000, RequestWaits(), surface_for(generation))

    return make


async def call(c: Caller, tool: str, **arguments: Any) -> types.CallToolResult:
    return await call_tool(c, tool, arguments)


def text(result: types.CallToolResult) -> str:
    return "".join(getattr(item, "text", "") for item in result.content)


def as_json(result: types.CallToolResult) -> Any:
    return json.loads(text(result))


# -- tool lists ------------------------------------------------------------------------------------


def test_each_generation_lists_its_own_tools(caller: MakeCaller) -> None:
    assert [t.name for t in list_tools(caller("a", Generation.CURRENT))] == TODAY
    assert [t.name for t in list_tools(caller("b", Generation.V1))] == V1
    # CORAL_SSE_URL readers: devmode agents (unprefixed) and the 1.0 agents grown from them
    assert [t.name for t in list_tools(caller("b", Generation.DEVMODE))] == V1 + [n[6:] for n in V1]


def test_plugins_add_close_session_in_each_generation(caller: MakeCaller, session: Session) -> None:
    session.agents["a"].plugins.append("close_session_tool")
    session.agents["b"].plugins.append("close_session_tool")
    assert [t.name for t in list_tools(caller("a", Generation.CURRENT))] == [*TODAY, "coral_close_session"]
    assert [t.name for t in list_tools(caller("b", Generation.V1))] == [*V1, "coral_close_session"]
    devmode = [t.name for t in list_tools(caller("b", Generation.DEVMODE))]
    assert "coral_close_session" in devmode and "close_session" not in devmode


def test_older_argument_names_are_in_the_schemas(caller: MakeCaller) -> None:
    tools = {t.name: t.input_schema for t in list_tools(caller("b", Generation.V1))}
    assert tools["coral_create_thread"]["required"] == ["threadName", "participantIds"]
    assert tools["coral_add_participant"]["required"] == ["threadId", "participantId"]
    assert set(tools["coral_wait_for_mentions"]["properties"]) == {"timeoutMs"}
    assert set(tools["coral_list_agents"]["properties"]) == {"includeDetails"}


def test_no_tool_of_today_is_shadowed_by_an_older_one() -> None:
    today = {t.name for t in SURFACES[Generation.CURRENT].tools}
    older_only = {t.name for g in (Generation.V1, Generation.DEVMODE) for t in SURFACES[g].tools} - today
    assert older_only == {"coral_list_agents", "coral_wait_for_mentions", *(n[6:] for n in V1)}


# -- 1.0 results -----------------------------------------------------------------------------------


async def test_v1_conversation_results(caller: MakeCaller) -> None:
    a, b = caller("a", Generation.CURRENT), caller("b", Generation.V1)
    created = await call(b, "coral_create_thread", threadName="t", participantIds=["a", "c"])
    assert not created.is_error and created.structured_content is None
    thread = as_json(created)
    assert thread["result"] == "create_thread_success"
    assert thread["thread"] == {
        "id": thread["thread"]["id"],
        "name": "t",
        "creatorId": "b",
        "participants": ["b", "a", "c"],
        "messages": [],
        "isClosed": False,
    }
    tid = thread["thread"]["id"]
    sent = as_json(await call(b, "coral_send_message", threadId=tid, content="hi", mentions=["a"]))
    assert sent["result"] == "send_message_success"
    assert {k: sent["message"][k] for k in ("threadName", "senderId", "content", "mentions")} == {
        "threadName": "t",
        "senderId": "b",
        "content": "hi",
        "mentions": ["a"],
    }
    assert isinstance(sent["message"]["timestamp"], int)

    # today's agent answers twice; one 1.0 wait returns every unseen mention at once
    for word in ("one", "two"):
        assert not (await call(a, "coral_send_message", threadId=tid, content=word, mentions=["b"])).is_error
    await call(a, "coral_send_message", threadId=tid, content="not for b", mentions=["c"])
    got = as_json(await call(b, "coral_wait_for_mentions", timeoutMs=1000))
    assert got["result"] == "wait_for_mentions_success"
    assert [(m["senderId"], m["content"]) for m in got["messages"]] == [("a", "one"), ("a", "two")]
    timeout = await call(b, "coral_wait_for_mentions", timeoutMs=0)
    assert as_json(timeout) == {"result": "error_timeout"} and not timeout.is_error

    assert as_json(await call(b, "coral_add_participant", threadId=tid, participantId="c")) == {
        "result": "add_participant_success"
    }
    assert as_json(await call(b, "coral_remove_participant", threadId=tid, participantId="c")) == {
        "result": "remove_participant_success"
    }
    assert as_json(await call(b, "coral_close_thread", threadId=tid, summary="done")) == {
        "result": "close_thread_success"
    }


async def test_v1_lists_the_agents_it_may_talk_to(caller: MakeCaller, session: Session) -> None:
    b = caller("b", Generation.V1)
    session.agents["a"].connected = True
    detailed = as_json(await call(b, "coral_list_agents", includeDetails=True))
    assert detailed == {
        "result": "agent_list_success_with_details",
        "agents": [
            {"id": "a", "description": "Agent A", "state": "busy"},
            {"id": "c", "description": "", "state": "disconnected"},
        ],
    }
    names = as_json(await call(b, "coral_list_agents", includeDetails=False))
    assert names == {"result": "agent_list_success", "agents": ["a", "c"]}


@pytest.mark.parametrize(
    ("tool", "arguments", "kind", "says"),
    [
        ("coral_send_message", {"threadId": "nope", "content": "x"}, "error", "not found"),
        (
            "coral_create_thread",
            {"threadName": "t", "participantNames": ["a"]},
            "tool_input_error",
            "participantIds",
        ),
        ("coral_wait_for_mentions", {"timeoutMs": -1}, "tool_input_error", "timeoutMs"),
        ("coral_wait_for_mention", {}, "error", "Tool coral_wait_for_mention not found"),
    ],
)
async def test_v1_errors_are_results_never_is_error(
    caller: MakeCaller, tool: str, arguments: dict[str, Any], kind: str, says: str
) -> None:
    result = await call_tool(caller("b", Generation.V1), tool, arguments)
    assert not result.is_error  # the 1.0 template dies on isError
    payload = as_json(result)
    assert payload["result"] == kind and says in payload["message"], payload


# -- devmode results -------------------------------------------------------------------------------


async def test_devmode_results_are_text(caller: MakeCaller) -> None:
    a, b = caller("a", Generation.CURRENT), caller("b", Generation.DEVMODE)
    created = text(await call(b, "create_thread", threadName="t", participantIds=["a"]))
    assert created.startswith("Thread created successfully:\nID: ")
    tid = created.split("\n")[1].removeprefix("ID: ")
    assert created.endswith("\nName: t\nCreator: b\nParticipants: b, a")
    sent = text(await call(b, "send_message", threadId=tid, content="hi", mentions=["a"]))
    assert sent.startswith("Message sent successfully:\nID: ") and sent.endswith(
        f"\nThread: {tid}\nSender: b"
    )

    await call(a, "coral_send_message", threadId=tid, content="a & <b>", mentions=["b"])
    xml = text(await call(b, "wait_for_mentions", timeoutMs=1000))
    [message] = ET.fromstring(xml).findall(".//ResolvedMessage")
    assert (message.get("threadId"), message.get("senderId"), message.get("content")) == (tid, "a", "a & <b>")
    assert [m.text for m in message.findall("mentions")] == ["b"]
    assert text(await call(b, "wait_for_mentions", timeoutMs=0)) == (
        "No new messages received within the timeout period"
    )
    assert text(await call(b, "list_agents", includeDetails=False)) == "Registered Agents (2):\na, c"
    assert text(await call(b, "close_thread", threadId=tid, summary="ok")) == (
        "Thread closed successfully with summary: ok"
    )
    failed = await call(b, "send_message", threadId=tid, content="late", mentions=[])
    assert not failed.is_error and text(failed).startswith("Error: ") and "closed" in text(failed)


# -- today's results are unchanged -----------------------------------------------------------------


async def test_current_errors_stay_errors(caller: MakeCaller) -> None:
    result = await call(
        caller("a", Generation.CURRENT), "coral_send_message", threadId="nope", content="x", mentions=[]
    )
    assert result.is_error and result.structured_content == {"error": text(result)}
    assert (await call(caller("a", Generation.CURRENT), "coral_list_agents")).is_error


# -- resources -------------------------------------------------------------------------------------


def test_resources_of_each_generation(caller: MakeCaller) -> None:
    uris = {g: [str(r.uri) for r in list_resources(caller("b", g))] for g in Generation}
    assert uris[Generation.CURRENT] == ["coral://instruction", "coral://state"]
    assert uris[Generation.V1] == [
        "coral://agent/instruction",
        "coral://messages",
        "coral://agents",
        "Instruction.resource",
        "Message.resource",
        "Agent.resource",
    ]
    assert uris[Generation.DEVMODE] == uris[Generation.V1]
    with pytest.raises(LookupError):
        read_resource(caller("a", Generation.CURRENT), "coral://messages")
    with pytest.raises(LookupError):
        read_resource(caller("b", Generation.V1), "coral://state")


async def test_v1_resources_show_the_agents_threads(caller: MakeCaller) -> None:
    b = caller("b", Generation.V1)
    tid = as_json(await call(b, "coral_create_thread", threadName="plans", participantIds=["a"]))["thread"][
        "id"
    ]
    await call(b, "coral_send_message", threadId=tid, content="step 1", mentions=["a"])
    await call(caller("c", Generation.V1), "coral_create_thread", threadName="private", participantIds=[])

    def read(uri: str) -> str:
        [content] = read_resource(b, uri).contents
        return getattr(content, "text", "")

    instruction = read("coral://agent/instruction")
    assert "coral_wait_for_mentions" in instruction and "participantIds" in instruction
    root = ET.fromstring(read("coral://messages"))
    [thread] = root.findall("ResolvedThread")  # not c's private thread
    assert (thread.get("id"), thread.get("name"), thread.get("isClosed")) == (tid, "plans", "false")
    assert [p.text for p in thread.findall("participants")] == ["b", "a"]
    assert [m.get("content") for m in thread.findall("ResolvedMessage")] == ["step 1"]
    assert read("Message.resource") == read("coral://messages")
    agents = read("coral://agents")
    assert "- a: Agent A" in agents and "- c: " in agents and "- b:" not in agents


def test_surface_for_every_generation() -> None:
    for generation in Generation:
        assert surface_for(generation).generation is generation
