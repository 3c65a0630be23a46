"""Agent runtimes: local processes, external agents (and Docker, next), behind one interface."""

from coral_server.runtimes.base import AgentHandle, AgentLog, LaunchFailed, LaunchSpec, LogLine, Runtime

__all__ = ["AgentHandle", "AgentLog", "LaunchFailed", "LaunchSpec", "LogLine", "Runtime"]
