"""`Work`: what one tool call asks of the providers, described before it runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from swarm_inference_mcp.server.jobs.outcome import Outcome
from swarm_inference_mcp.tools.progress import ProgressFn


@dataclass(frozen=True)
class Work:
    """One tool call's upstream work."""

    tool: str
    providers: tuple[str, ...]
    labels: str
    """How people name the providers: "Fortytwo", "Fortytwo and Swarms"."""
    request: str
    """The exact request bodies, as text: identical work asks identically."""
    timeout_s: float
    client: str | None
    """The HTTP client that asked (None over stdio)."""
    run: Callable[[ProgressFn | None, str], Awaitable[Outcome]]
    """Does the work (given a progress callback and the job's id); never raises."""

    @property
    def key(self) -> str:
        """Identical work of one client has an identical key. (Two clients asking the same are two
        jobs, each its own, that share one upstream request.)"""
        return f"{self.client}\n{self.tool}\n{self.request}"

    @classmethod
    def refused(cls, tool: str, client: str | None) -> Work:
        """The work of a call refused before it asked anything (bad arguments, a limit): nothing to run."""

        async def nothing(_progress: ProgressFn | None, _job_id: str) -> Outcome:
            raise AssertionError("a refused call's work never runs")

        return cls(tool, (), tool, "refused", 0.0, client, nothing)
