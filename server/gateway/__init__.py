"""The HTTP transport: its gate (Host/Origin, tokens, sessions per client), serving, draining, /metrics."""
