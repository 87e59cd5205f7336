"""Shared pytest setup: the repo root on sys.path (for ``tests.*`` helpers) and quiet telemetry."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


@dataclass(frozen=True)
class Served:
    """A running ``bentoml serve`` process of the service on the tiny test bundles."""

    url: str
    pid: int
    log: Path

    def rss_mb(self) -> float:
        """Resident memory of the server's whole process tree (arbiter, workers, children), MiB."""
        from testkit.server import tree_rss_bytes

        return tree_rss_bytes(self.pid) / 2**20


UPLOAD_CAP_MB = 1.0  # /predict
SCENE_UPLOAD_CAP_MB = 2.0
STARTUP_SECONDS = 60.0


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Start ``bentoml serve`` on the tiny bundles (small upload caps); yield it."""
    import requests

    from testkit.bundles import build_bundles
    from testkit.server import free_port, start_server, stop_server

    root = tmp_path_factory.mktemp("serve")
    build_bundles(root / "models")
    port = free_port()
    extra_env = {
        "SARVEG_TILE_MAX_UPLOAD_MB": str(UPLOAD_CAP_MB),
        "SARVEG_SCENE_MAX_UPLOAD_MB": str(SCENE_UPLOAD_CAP_MB),
        "BENTOML_HOME": str(root / "bentoml"),
    }
    log = root / "server.log"
    process = start_server(str(root / "models"), port, log, extra_env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(log.read_text()[-3000:])
            try:
                if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready: " + log.read_text()[-3000:])
            time.sleep(0.3)
        yield Served(url, process.pid, log)
    finally:
        stop_server(process)
