"""A real Prometheus server (Debian's package `prometheus`) on a free loopback port, scraping one target
every second, and its HTTP query API. Never an imitation of Prometheus."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.servers import free_port, wait_until_up

SCRAPE_S = 1


class Prometheus:
    def __init__(self, workdir: Path, target: str, token: str | None, metrics_path: str = "/metrics") -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail(
                "these tests need a real Prometheus server: install Debian's package (apt-get install prometheus; "
                ".ci/run does), or put a prometheus binary on PATH"
            )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        job: dict[str, Any] = {
            "job_name": "swarm",
            "metrics_path": metrics_path,
            "static_configs": [{"targets": [target]}],
        }
        if token is not None:
            job["authorization"] = {"credentials": token}
        config = {"global": {"scrape_interval": f"{SCRAPE_S}s", "scrape_timeout": "900ms"}, "scrape_configs": [job]}
        (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self._log = workdir / "prometheus.log"
        self._argv = [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(self._argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        wait_until_up(f"{self.url}/-/ready", self._process, "Prometheus", self._log)
        # Prometheus hands new targets to its scrapers a few seconds after it starts: until the first
        # scrape, what the target did is lost for any gauge.
        try:
            self.wait_for({'up{job="swarm"}': 1})
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector `expression` evaluates to now, as Prometheus' API returns it."""
        response = httpx2.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expression: str) -> float | None:
        """The single value of `expression` now, or None when it selects nothing."""
        result = self.query(expression)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expected: dict[str, float], timeout_s: float = 30) -> None:
        """Until every expression in `expected` has its value (new samples arrive once a scrape interval)."""
        deadline = time.monotonic() + timeout_s
        while True:
            seen = {expression: self.value(expression) for expression in expected}
            if seen == expected:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus did not see the expected values within {timeout_s} s: {seen}")
            time.sleep(0.25)
