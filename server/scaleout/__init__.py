"""Redis, for several instances: the one connection, the shared job board, the shared usage.

Everything that imports redis lives here, imported only when SWARM_MCP_REDIS_URL is set."""
