"""`python -m swarm_inference_mcp` runs the server, as `python -m mcp_server_fetch` runs that one.

Installed, this file is the top-level package's only file of its own (`swarm_inference_mcp` is a
namespace package: `server` and `tools` are mapped onto it by pyproject.toml's `package-dir`).
"""

from swarm_inference_mcp.server.cli import main

raise SystemExit(main())
