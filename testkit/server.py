"""A real ``bentoml serve`` process of the sarveg service, for the tests and bench/serve.py."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """An unused TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    models: str,
    port: int,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    target: str = "serving.service:SarVeg",
    cwd: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """Start ``bentoml serve TARGET`` on ``models``, logging to ``log_path``.

    ``target`` is the service's import path; bench/serve.py also starts its echo service.
    ``cwd`` is the checkout whose code is served (bench/serve.py serves an older commit too).
    """
    env = os.environ | {
        "SARVEG_MODELS": models,
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(cwd), os.environ.get("PYTHONPATH")])),
    }
    bentoml = Path(sys.executable).with_name("bentoml")
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [str(bentoml), "serve", target, "--port", str(port)],
            cwd=cwd,
            env=env | (extra_env or {}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the arbiter's workers die with the group
        )


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's whole process group, forcefully if it lingers."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def tree_processes(pid: int) -> list:
    """The process and all its descendants (psutil processes)."""
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_rss_bytes(pid: int) -> int:
    """Resident bytes of a process tree (a server's arbiter, workers and decoding children)."""
    import psutil

    total = 0
    for process in tree_processes(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process tree so far."""
    import psutil

    total = 0.0
    for process in tree_processes(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total
