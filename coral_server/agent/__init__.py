"""Helper library for writing Coral agents in Python.

It connects to the Coral server with the official MCP client and offers typed helpers
for the Coral tools; see `CoralAgent`. It never imports server code (an import-linter
contract checks this) and keeps its import cheap, because every agent start pays it.
"""

from coral_server.agent.client import (
    AgentEnv,
    ConfigError,
    ConnectionLost,
    CoralAgent,
    MentionHandler,
    ToolError,
    configure_logging,
    is_disconnect,
    message_of,
    parse_tool_result,
    result_text,
    transport_for,
)

__all__ = [
    "AgentEnv",
    "ConfigError",
    "ConnectionLost",
    "CoralAgent",
    "MentionHandler",
    "ToolError",
    "configure_logging",
    "is_disconnect",
    "message_of",
    "parse_tool_result",
    "result_text",
    "transport_for",
]
