"""The puppet API: an app (a human in the loop) acts as one of a session's agents over HTTP.

The bodies are the MCP tools' arguments and the same collaboration rules apply (links,
participation, closed threads), so a puppeted agent is indistinguishable from one on MCP.
The answers have the reference server's shapes: `{thread}` and `{status, message}` holding its
thread and message (ISO 8601 timestamps); where the reference answers an empty 200 (close,
participants, stop) we answer `{thread}` alike, and `{agent}` (our agent state) for a stop.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from coral_server.api import reference, views
from coral_server.api.body import read_model
from coral_server.api.errors import error_response, json_response
from coral_server.api.keys import SESSIONS
from coral_server.api.models import (
    PuppetAgentAnswer,
    PuppetCloseThread,
    PuppetCreateThread,
    PuppetMessageAnswer,
    PuppetParticipant,
    PuppetSendMessage,
    PuppetThreadAnswer,
)
from coral_server.sessions import Session, SessionAgent, Thread
from coral_server.sessions.errors import NotParticipant

PREFIX = "/api/v1/puppet/{namespace}/{session}/{agent}"
SENT: Final = "Message sent successfully"  # the reference's `status`, word for word


def _actor(request: web.Request) -> tuple[Session, SessionAgent]:
    session = request.app[SESSIONS].get(request.match_info["namespace"], request.match_info["session"])
    return session, session.agent(request.match_info["agent"])


def _thread(thread: Thread) -> web.Response:
    answer: PuppetThreadAnswer = {"thread": reference.thread(thread)}
    return json_response(answer)


async def create_thread(request: web.Request) -> web.Response:
    session, agent = _actor(request)
    body = await read_model(request, PuppetCreateThread)
    return _thread(session.create_thread(agent, body.threadName, body.participantNames))


async def close_thread(request: web.Request) -> web.Response:
    session, agent = _actor(request)
    body = await read_model(request, PuppetCloseThread)
    return _thread(session.close_thread(agent, body.threadId, body.summary))


async def send_message(request: web.Request) -> web.Response:
    session, agent = _actor(request)
    body = await read_model(request, PuppetSendMessage)
    try:
        message = session.send_message(agent, body.threadId, body.content, body.mentions)
    except NotParticipant as err:
        if err.agent == agent.name:
            raise
        return error_response(404, str(err))  # a mention of a non-participant: 404, as the reference
    await session.hand_over(message)
    answer: PuppetMessageAnswer = {"status": SENT, "message": reference.message(message)}
    return json_response(answer)


async def add_participant(request: web.Request) -> web.Response:
    session, agent = _actor(request)
    body = await read_model(request, PuppetParticipant)
    return _thread(session.add_participant(agent, body.threadId, body.participantName))


async def remove_participant(request: web.Request) -> web.Response:
    session, agent = _actor(request)
    body = await read_model(request, PuppetParticipant)
    return _thread(session.remove_participant(agent, body.threadId, body.participantName))


async def stop_agent(request: web.Request) -> web.Response:
    session, agent = _actor(request)
    await session.stop_agent(agent)
    answer: PuppetAgentAnswer = {"agent": views.agent_state(agent)}
    return json_response(answer)


def add_routes(app: web.Application) -> None:
    app.router.add_post(PREFIX + "/thread", create_thread)
    app.router.add_delete(PREFIX + "/thread", close_thread)
    app.router.add_post(PREFIX + "/thread/message", send_message)
    app.router.add_post(PREFIX + "/thread/participant", add_participant)
    app.router.add_delete(PREFIX + "/thread/participant", remove_participant)
    app.router.add_delete(PREFIX, stop_agent)
