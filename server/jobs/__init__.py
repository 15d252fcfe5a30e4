"""Jobs: what a call asks (Work), running it, keeping its outcome per client, sharing identical requests."""
