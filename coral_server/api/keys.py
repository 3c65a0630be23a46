"""Typed keys of the services the app factory hangs on the aiohttp Application."""

from __future__ import annotations

from aiohttp import web

from coral_server.config import Settings
from coral_server.events import EventBus
from coral_server.registry import Registry
from coral_server.runs.service import Runs
from coral_server.sessions import Sessions
from coral_server.store import StoreHealth
from coral_server.tasks import Tasks
from coral_server.webhooks.service import Webhooks

SETTINGS = web.AppKey("settings", Settings)
SESSIONS = web.AppKey("sessions", Sessions)
REGISTRY = web.AppKey("registry", Registry)
EVENTS = web.AppKey("events", EventBus)
WEBHOOKS = web.AppKey("webhooks", Webhooks)
RUNS = web.AppKey("runs", Runs)
TASKS = web.AppKey("tasks", Tasks)
STORE_HEALTH = web.AppKey("store_health", StoreHealth)
