"""Agent runtimes: local processes, Docker containers, external agents, behind one interface."""

from coral_server.runtimes.base import (
    AgentHandle,
    AgentLog,
    LaunchFailed,
    LaunchSpec,
    LogLine,
    Owner,
    Runtime,
    Terminal,
)

__all__ = ["AgentHandle", "AgentLog", "LaunchFailed", "LaunchSpec", "LogLine", "Owner", "Runtime", "Terminal"]
