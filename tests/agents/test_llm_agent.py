"""The bundled LLM agent, driven by the scripted fake OpenAI server.

Every test runs through a real Coral server (`coral` fixture), which launches the agent from
`registry/llm` (runtime `executable`). The model API is the only stand-in (`FakeOpenAI`).
Sessions hold their state after the agent exits (`persistenceMode: hold_after_exit`), so
its exit code and stderr can be read from the session state and the agent log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coral_server.agent import CoralAgent
from tests.conftest import Coral, agent_spec, session_body
from tests.fakes.openai import FakeOpenAI, HttpError, last_tool_result_json, tool_results

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "agents" / "llm" / "agent.py"
API_KEY = "sk-test-5f1d2c8e-do-not-leak"


class Brain:
    """A scripted model: wait for a mention, answer it mentioning its sender, then say done."""

    def __init__(self) -> None:
        self.replied = False

    def __call__(self, request: dict[str, Any]) -> str | list[tuple[str, dict[str, Any]]]:
        if self.replied:
            return "done"
        result = last_tool_result_json(request)
        message = result.get("message") if isinstance(result, dict) else None
        if message and message.get("senderName") == "tester":
            self.replied = True
            return [
                (
                    "coral_send_message",
                    {
                        "threadId": message["threadId"],
                        "content": f"pong: {message['text']}",
                        "mentions": [message["senderName"]],
                    },
                )
            ]
        return [("coral_wait_for_mention", {"maxWaitMs": 10_000})]


# -- through a running Coral server ------------------------------------------------------------


async def test_llm_agent_end_to_end(coral: Any) -> None:
    async with FakeOpenAI([Brain()] * 6) as fake:
        body = {
            "agentGraphRequest": {
                "agents": [
                    {
                        "id": {"name": "llm", "version": "0.1.0", "source": "local"},
                        "name": "llm",
                        "provider": {"type": "local", "runtime": "executable"},
                        "options": {
                            "BASE_URL": {"type": "string", "value": fake.base_url},
                            "MODEL": {"type": "string", "value": "fake-model"},
                            "API_KEY": {"type": "secret", "value": API_KEY},
                            "MAX_ITERATIONS": {"type": "i32", "value": 4},
                        },
                    },
                    {
                        "id": {"name": "echo", "version": "0.1.0", "source": "local"},
                        "name": "tester",
                        "provider": {"type": "local", "runtime": "external"},
                    },
                ],
                "groups": [["llm", "tester"]],
            },
            "namespaceProvider": {
                "type": "create_if_not_exists",
                "namespaceRequest": {"name": "agents-llm", "deleteOnLastSessionExit": True},
            },
            "execution": {"mode": "immediate"},
        }
        ns, sid = await coral.create_session(body)
        url = await coral.connection_url(ns, sid, "tester")

        async with CoralAgent(url, "tester") as tester:
            thread = await tester.create_thread("llm-test", ["llm"])
            await tester.send_message(thread["id"], "ping", ["llm"])
            reply = await tester.wait_for_mention(20_000)
            assert reply is not None, "the llm agent did not answer"
            assert reply["senderName"] == "llm"
            assert reply["text"] == "pong: ping"
            assert reply["threadId"] == thread["id"]

        first = fake.requests[0]
        assert first.headers["Authorization"] == f"Bearer {API_KEY}"
        assert "coral_send_message" in first.tool_names
        assert "coral_wait_for_mention" in first.tool_names
        assert first.json["model"] == "fake-model"
        assert first.messages[0]["role"] == "system"
        assert not fake.errors

        state = await coral.wait_for(
            ns,
            sid,
            lambda s: any(
                m["text"] == "pong: ping"
                for t in s["threads"]
                if t["id"] == thread["id"]
                for m in t["messages"]
            ),
        )
        assert API_KEY not in json.dumps(state)
        status, agents_body = await coral.request("GET", f"/api/v1/local/session/{ns}/{sid}")
        assert status == 200
        assert API_KEY not in json.dumps(agents_body)


# -- launched by a running Coral server, exit code read from the session state -------------------

HOLD = {"mode": "hold_after_exit", "duration": 10000}


def _llm(
    base_url: str, api_key: str = API_KEY, *, system_prompt: str | None = None, **options: Any
) -> dict[str, Any]:
    """The bundled `llm` agent (runtime executable) talking to the fake model API at `base_url`."""
    typed = {
        "BASE_URL": {"type": "string", "value": base_url},
        "API_KEY": {"type": "secret", "value": api_key},
        **options,
    }
    extra: dict[str, Any] = {"options": typed}
    if system_prompt is not None:
        extra["systemPrompt"] = system_prompt
    return agent_spec("llm", registry_name="llm", **extra)


async def _launch(coral: Coral, llm: dict[str, Any], *others: dict[str, Any]) -> tuple[str, str]:
    return await coral.create_session(
        session_body([llm, *others], namespace="agents-llm", persistenceMode=HOLD)
    )


async def _exit(coral: Coral, ns: str, sid: str, timeout: float = 30) -> tuple[int, str]:
    """Wait until the llm agent has exited; its exit code and its stderr (from the agent log)."""

    def exited(state: dict[str, Any]) -> bool:
        return any(a["name"] == "llm" and a["status"] == "exited" for a in state["agents"])

    state = await coral.wait_for(ns, sid, exited, timeout=timeout)
    [agent] = [a for a in state["agents"] if a["name"] == "llm"]
    status, logs = await coral.request("GET", f"/api/v1/local/session/{ns}/{sid}/agents/llm/logs")
    assert status == 200, logs
    stderr = "\n".join(line["text"] for line in logs["lines"] if line["stream"] == "stderr")
    assert "exitCode" in agent, agent
    return agent["exitCode"], stderr


async def test_llm_agent_answers_a_mention(coral: Coral) -> None:
    async with FakeOpenAI([Brain()] * 5) as fake:
        llm = _llm(
            fake.base_url,
            system_prompt="Be brief.",
            MAX_ITERATIONS={"type": "i32", "value": 3},
            TEMPERATURE={"type": "f64", "value": 0.25},
        )
        ns, sid = await _launch(coral, llm, agent_spec("tester", runtime="external"))
        async with CoralAgent(await coral.connection_url(ns, sid, "tester"), "tester") as tester:
            thread = await tester.create_thread("t", ["llm"])
            await tester.send_message(thread["id"], "ping", ["llm"])
            reply = await tester.wait_for_mention(20_000)
            assert reply is not None and (reply["senderName"], reply["text"]) == ("llm", "pong: ping")
        code, stderr = await _exit(coral, ns, sid)
        assert code == 0, stderr
        assert API_KEY not in stderr
        assert len(fake.requests) == 3  # MAX_ITERATIONS model calls
        first = fake.requests[0]
        assert first.headers["Authorization"] == f"Bearer {API_KEY}"
        assert {"coral_send_message", "coral_wait_for_mention", "coral_create_thread"} <= set(
            first.tool_names
        )
        assert first.json["temperature"] == 0.25
        system = first.messages[0]
        assert system["role"] == "system"
        assert "You are an agent named llm" in system["content"] and "Be brief." in system["content"]
        assert "# Current Coral state" in system["content"]
        assert (
            first.messages[1]["role"] == "user" and "coral_wait_for_mention" in first.messages[1]["content"]
        )
        # the state is re-read every iteration: the thread shows up in later system prompts
        assert thread["id"] in fake.requests[1].messages[0]["content"]
        assert "pong: ping" not in fake.requests[1].messages[0]["content"]
        assert "pong: ping" in fake.requests[2].messages[0]["content"]
        # the tool results went back to the model, answered in order
        last = fake.requests[2].json["messages"]
        assert [m["role"] for m in last[1:]] == ["user", "assistant", "tool", "assistant", "tool"]
        assert last[3]["tool_call_id"] == last[2]["tool_calls"][0]["id"]


async def test_llm_agent_reports_tool_errors_and_nudges(coral: Coral) -> None:
    script: list[Any] = [
        lambda req: [("coral_send_message", {"threadId": "nope", "content": "x", "mentions": []})],
        lambda req: [("no_such_tool", {})],
        lambda req: "I think I am finished.",
    ]
    async with FakeOpenAI(script) as fake:
        ns, sid = await _launch(coral, _llm(fake.base_url, MAX_ITERATIONS={"type": "i32", "value": 4}))
        code, stderr = await _exit(coral, ns, sid)
        assert code == 0, stderr
        assert len(fake.requests) == 4
        results = tool_results(fake.requests[3].json)
        assert results[0].startswith("Error:") and "'nope' not found" in results[0]
        assert results[1].startswith("Error: unknown tool 'no_such_tool'")
        messages = fake.requests[3].messages
        assert messages[-1]["role"] == "user" and "coral_wait_for_mention" in messages[-1]["content"]
        assert not fake.errors


async def test_llm_agent_gives_up_on_model_errors(coral: Coral) -> None:
    async with FakeOpenAI([lambda req: HttpError(500, "down")] * 10) as fake:
        ns, sid = await _launch(coral, _llm(fake.base_url))
        code, stderr = await _exit(coral, ns, sid)
        assert code == 1
        assert len(fake.requests) == 4  # 1 try + 3 retries
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert errors == [
            'error: model API failed after 4 attempts: HTTP 500: {"error": {"message": "down", '
            '"type": "server_error", "code": null}}'
        ]
        assert API_KEY not in stderr


async def test_llm_agent_requires_api_key(coral: Coral) -> None:
    async with FakeOpenAI([]) as fake:
        ns, sid = await _launch(coral, _llm(fake.base_url, api_key=""))
        code, stderr = await _exit(coral, ns, sid)
        assert code == 2
        assert "error: API_KEY is not set" in stderr
        assert not fake.requests
