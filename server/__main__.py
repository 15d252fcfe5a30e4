from swarm_inference_mcp.server.cli import main

raise SystemExit(main())
