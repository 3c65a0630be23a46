"""coral_server: orchestrates teams of AI agents over MCP."""

__version__ = "0.1.0"
