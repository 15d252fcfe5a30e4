"""The MCP server: app, configuration, CLI, transports."""

__version__ = "0.1.0"
