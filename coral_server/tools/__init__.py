"""Custom tools: app-defined tools that agents call over MCP and the server forwards to the app."""

from coral_server.tools.forward import CustomToolError, CustomToolForwarder, ToolOutcome

__all__ = ["CustomToolError", "CustomToolForwarder", "ToolOutcome"]
