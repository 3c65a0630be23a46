"""The session domain: namespaces, sessions, agents, threads, mailboxes; pure asyncio, no HTTP."""

from coral_server.sessions.agent import SessionAgent
from coral_server.sessions.errors import SessionError
from coral_server.sessions.facts import NamespaceInfo, SessionInfo
from coral_server.sessions.model import Message, Thread
from coral_server.sessions.report import AgentEnd, SessionEnd
from coral_server.sessions.service import ExecutionSettings, Namespace, Sessions, SessionSettings
from coral_server.sessions.session import Session
from coral_server.sessions.spec import AgentRequest, CustomToolSpec, EndWebhook, SessionRequest

__all__ = [
    "AgentEnd",
    "AgentRequest",
    "CustomToolSpec",
    "EndWebhook",
    "ExecutionSettings",
    "Message",
    "Namespace",
    "NamespaceInfo",
    "Session",
    "SessionAgent",
    "SessionEnd",
    "SessionError",
    "SessionInfo",
    "SessionRequest",
    "SessionSettings",
    "Sessions",
    "Thread",
]
