"""The puppet API: an app (a human in the loop) acts as one of a session's agents over HTTP.

The bodies are the MCP tools' arguments and the same collaboration rules apply (links,
participation, closed threads), so a puppeted agent is indistinguishable from one on MCP.
"""

from __future__ import annotations

from aiohttp import web

from coral_server.api import views
from coral_server.api.body import read_model
from coral_server.api.errors import json_response
from coral_server.api.keys import SESSIONS
from coral_server.api.models import (
    PuppetCloseThread,
    PuppetCreateThread,
    PuppetParticipant,
    PuppetSendMessage,
)
from coral_server.sessions import Session, SessionAgent

PREFIX = "/api/v1/puppet/{namespace}/{session}/{agent}"


def _actor(request: web.Request) -> tuple[Session, SessionAgent]:
    session = request.app[SESSIONS].get(request.match_info["namespace"], request.match_info["session"])
    return session, session.agent(request.match_info["agent"])


async def create_thread(request: web.Request) -> web.Response:
    session, agent = _actor(request)
    body = await read_model(request, PuppetCreateThread)
    thread = session.create_thread(agent, body.threadName, body.participantNames)
    return json_response(views.thread_state(thread))


async def close_thread(request: web.Request) -> web.Response:
    session, agent = _actor(request)
    body = await read_model(request, PuppetCloseThread)
    return json_response(views.thread_state(session.close_thread(agent, body.threadId, body.summary)))


async def send_message(request: web.Request) -> web.Response:
    session, agent = _actor(request)
    body = await read_model(request, PuppetSendMessage)
    message = session.send_message(agent, body.threadId, body.content, body.mentions)
    await session.hand_over(message)
    return json_response(views.message_state(message))


async def add_participant(request: web.Request) -> web.Response:
    session, agent = _actor(request)
    body = await read_model(request, PuppetParticipant)
    thread = session.add_participant(agent, body.threadId, body.participantName)
    return json_response(views.thread_state(thread))


async def remove_participant(request: web.Request) -> web.Response:
    session, agent = _actor(request)
    body = await read_model(request, PuppetParticipant)
    thread = session.remove_participant(agent, body.threadId, body.participantName)
    return json_response(views.thread_state(thread))


async def stop_agent(request: web.Request) -> web.Response:
    session, agent = _actor(request)
    await session.stop_agent(agent)
    return json_response(views.agent_state(agent))


def add_routes(app: web.Application) -> None:
    app.router.add_post(PREFIX + "/thread", create_thread)
    app.router.add_delete(PREFIX + "/thread", close_thread)
    app.router.add_post(PREFIX + "/thread/message", send_message)
    app.router.add_post(PREFIX + "/thread/participant", add_participant)
    app.router.add_delete(PREFIX + "/thread/participant", remove_participant)
    app.router.add_delete(PREFIX, stop_agent)
