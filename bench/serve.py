"""Benchmark the HTTP service against the bare ONNX Runtime call, in one run.

Usage:
    python bench/serve.py [--models models/ | --tiny] [--modality s1grd] [--load 2000]
                          [--tile-px N | --tile-file TILE.tif] [--no-floor]
    python bench/serve.py --compare-decoding [--before-ref GIT_REF] [--models ... | --tiny]

Starts ``bentoml serve serving.service:SarVeg`` on a free port with ``SARVEG_MODELS`` set to
``--models`` (default: the repository's ``models/``; ``--tiny`` builds the torch-free test
bundles of ``testkit/bundles.py`` in a temporary folder), then prints side by side:

- latency of one tile (multipart upload, as ``curl -F tile=@...``): p50 / p95 over HTTP at
  concurrency 1 against the bare model call (``session.run`` on the same decoded, resampled
  tile). The difference is everything the service adds to the model: HTTP, upload parsing,
  decoding (in a child process), resampling, the OOD block and the JSON answer; target: p50
  at most 15 ms;
- throughput (tiles/s) at concurrency 1, 4 and 16 against raw ONNX Runtime at the max batch
  size and at the batch size the server actually formed at that level (the mean of its
  ``sarveg_model_batch_size`` metric, rounded to a measured batch size); target: at least 0.8x
  of the max-batch rate at concurrency 16. Beside each level: the server's own CPU time per
  request (CPU seconds of all its processes, decoding children included, over the requests),
  a figure that does not depend on the client sharing the cores;
- load: ``--load`` requests at concurrency 16: errors, and the resident memory of the server's
  processes after a warm-up and at the end; target: zero errors, growth under 10 %.

The client runs on the same machine (aiohttp, one process) and takes CPU from the server, so
the HTTP figures are pessimistic on a small machine. Tiles are synthetic (``testkit.tiles``).

The floor (skip with ``--no-floor``): the same client at concurrency 16 against
``bench/echo_service.py``, a BentoML endpoint with ``/predict``'s upload that only reads the file.
Its rate ``E`` is what HTTP alone allows here, so no server can exceed ``E * R / (E + R)`` tiles/s
when the model alone runs ``R`` tiles/s on the same cores: that bound is printed as a ratio. The
same is measured for a bare ASGI echo under uvicorn (no framework: any Python server's floor). If
``hey`` (Debian package) is on the PATH, the echoes and the real server are also measured with
it, a compiled client that takes less CPU than aiohttp.

``--compare-decoding`` measures what decoding uploads in limited child processes costs: the same
tile, client, warm-up and request counts against servers that decode in the server process
(``SARVEG_DECODE_SANDBOX=off``), in child processes (the default), and, with ``--before-ref``,
the code of that git commit (checked out into a temporary worktree, same venv). Rounds alternate
the servers and medians are printed: p50 latency at concurrency 1, throughput at concurrency 16
(target: the sandbox costs at most 10 % of it), the server's RSS at rest, and its peak RSS while
32 concurrent clients send a 2.3 KB sparse 2048 x 2048 x 16 GeoTIFF (the header bomb), sampled
every 20 ms over the whole process tree.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sarveg import bands  # noqa: E402
from serving.decoding import DecodeLimits  # noqa: E402
from serving.predictor import Predictor  # noqa: E402
from testkit.hostile import sparse_bomb  # noqa: E402
from testkit.server import (  # noqa: E402
    free_port,
    start_server,
    stop_server,
    tree_cpu_seconds,
    tree_rss_bytes,
)
from testkit.tiles import coherence_x100, s1grd_db, write_geotiff  # noqa: E402

CONCURRENCY = (1, 4, 16)
# The bench's own decoding (probe and raw baseline) runs in-process: no children to manage.
IN_PROCESS = DecodeLimits(sandbox=False)
TARGET_P50_OVERHEAD_MS = 15.0
TARGET_THROUGHPUT_RATIO = 0.8
TARGET_RSS_GROWTH = 0.10


async def wait_ready(
    url: str, process: subprocess.Popen[bytes], timeout_s: float, path: str = "/readyz"
) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError("server exited during start-up")
            try:
                async with session.get(f"{url}{path}") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError(f"server not ready after {timeout_s:.0f} s")


async def run_requests(
    url: str, payload: bytes, n_requests: int, concurrency: int
) -> tuple[list[float], int, float]:
    """POST ``payload`` as multipart ``tile`` ``n_requests`` times; latencies, errors, wall s."""
    latencies: list[float] = []
    errors = 0
    remaining = n_requests
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                form = aiohttp.FormData()
                form.add_field("tile", payload, filename="tile.tif")
                start = time.perf_counter()
                try:
                    async with session.post(f"{url}/predict", data=form) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return latencies, errors, wall


async def batch_stats(url: str) -> tuple[float, float]:
    """Return (sum, count) of the server's sarveg_model_batch_size histogram."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        text = await response.text()
    total = sum(float(v) for v in re.findall(r"^sarveg_model_batch_size_sum\S* (\S+)", text, re.M))
    count = sum(
        float(v) for v in re.findall(r"^sarveg_model_batch_size_count\S* (\S+)", text, re.M)
    )
    return total, count


def multipart_body(payload: bytes, directory: Path) -> tuple[Path, str]:
    """The multipart request body that ``curl -F tile=@tile.tif`` sends, and its content type."""
    boundary = "sarvegbenchboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="tile"; '
        'filename="tile.tif"\r\nContent-Type: image/tiff\r\n\r\n'
    ).encode()
    path = directory / "body.multipart"
    path.write_bytes(head + payload + f"\r\n--{boundary}--\r\n".encode())
    return path, f"multipart/form-data; boundary={boundary}"


def hey_rate(url: str, body: Path, content_type: str, n: int, concurrency: int) -> float:
    """Requests/s that ``hey`` measures for ``n`` POSTs of ``body`` to ``url``/predict."""
    result = subprocess.run(
        ["hey", "-n", str(n), "-c", str(concurrency), "-m", "POST", "-T", content_type]
        + ["-D", str(body), f"{url}/predict"],
        capture_output=True,
        text=True,
        check=True,
    )
    statuses = re.findall(r"\[(\d{3})\]\s+(\d+) responses", result.stdout)
    if any(code != "200" for code, _ in statuses):
        raise RuntimeError(f"hey saw answers other than 200: {statuses}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if match is None:
        raise RuntimeError(f"unexpected hey output:\n{result.stdout}")
    return float(match.group(1))


def start_asgi_echo(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """Start uvicorn on the bare ASGI echo of bench/echo_service.py."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.echo_service:app", "--port", str(port)]
            + ["--log-level", "warning"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def measure_floor(
    models: str,
    payload: bytes,
    n: int,
    workdir: Path,
    body: tuple[Path, str] | None,
    bare: bool,
) -> tuple[float, float | None]:
    """Tiles/s of an echo at concurrency 16: with aiohttp, and with hey if given.

    ``bare``: the framework-free ASGI echo under uvicorn, else the BentoML echo service.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if bare:
        process = start_asgi_echo(port, workdir / "asgi-echo.log")
    else:
        process = start_server(models, port, workdir / "echo.log", target="bench.echo_service:Echo")
    try:
        await wait_ready(url, process, 120.0, path="/readyz" if not bare else "/")
        await run_requests(url, payload, 100, 16)  # warm-up
        _, errors, wall = await run_requests(url, payload, n, 16)
        if errors:
            raise RuntimeError(f"the echo service failed {errors} of {n} requests")
        with_hey = hey_rate(url, *body, n, 16) if body is not None else None
    finally:
        stop_server(process)
    return n / wall, with_hey


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def make_tile(modality: str, side: int, directory: Path) -> Path:
    if modality == "s1grd":
        return write_geotiff(directory / "tile.tif", s1grd_db(side=side), bands.S1GRD_RAW_BANDS)
    coherence = coherence_x100(side=side)[:, :2]  # (4 seasons, 12/24 days, side, side)
    channels = np.concatenate([coherence[[2, 3, 0, 1], 0], coherence[[2, 3, 0, 1], 1]])
    return write_geotiff(directory / "tile.tif", channels, bands.GSSIC_CHANNELS)


RAW_BATCHES = (1, 2, 4, 8, 16, 32)


def raw_rates_by_batch(
    models: str, modality: str, payload: bytes, seconds: float
) -> dict[int, float]:
    """Raw onnxruntime tiles/s at each of :data:`RAW_BATCHES`, on the decoded payload."""
    predictor = Predictor.from_paths(models, limits=IN_PROCESS)
    model, array = predictor.prepare(payload, modality)
    rates = {}
    for size in RAW_BATCHES:
        batch = np.repeat(array[None], size, axis=0)  # (b, C, S, S)
        for _ in range(3):
            model.onnx.run(batch)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or calls < 5:
            model.onnx.run(batch)
            calls += 1
        rates[size] = calls * size / (time.perf_counter() - start)
    return rates


def raw_baseline(
    models: str, modality: str, payload: bytes, seconds: float
) -> tuple[list[float], float, int]:
    """Raw onnxruntime: per-call latencies at batch 1, and tiles/s at the max batch size."""
    predictor = Predictor.from_paths(models, limits=IN_PROCESS)
    model, array = predictor.prepare(payload, modality)
    single = array[None]  # (1, C, S, S)
    batch = np.repeat(single, predictor.max_batch_size, axis=0)  # (B, C, S, S)
    for _ in range(5):
        model.onnx.run(single)
        model.onnx.run(batch)
    latencies = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or len(latencies) < 50:
        start = time.perf_counter()
        model.onnx.run(single)
        latencies.append(time.perf_counter() - start)
    calls = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 5:
        model.onnx.run(batch)
        calls += 1
    throughput = calls * len(batch) / (time.perf_counter() - start)
    return latencies, throughput, predictor.max_batch_size


async def measure(args: argparse.Namespace, models: str, workdir: Path) -> int:
    predictor_probe = Predictor.from_paths(models, limits=IN_PROCESS)
    model = predictor_probe.model_for(args.modality)
    side = args.tile_px or model.manifest.source_tile_px
    tile_path = args.tile_file or make_tile(args.modality, side, workdir)
    payload = tile_path.read_bytes()
    raw_latencies, raw_throughput, max_batch = raw_baseline(models, args.modality, payload, 2.0)
    raw_by_batch = raw_rates_by_batch(models, args.modality, payload, 1.0)
    del predictor_probe

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(models, port, workdir / "server.log")
    try:
        await wait_ready(url, process, 120.0)
        await run_requests(url, payload, 50, 4)  # warm-up
        http_latencies, errors, _ = await run_requests(url, payload, args.latency_requests, 1)
        rows = []
        for concurrency in CONCURRENCY:
            before = await batch_stats(url)
            cpu_before = tree_cpu_seconds(process.pid)
            n = max(args.throughput_requests, 20 * concurrency)
            _, level_errors, wall = await run_requests(url, payload, n, concurrency)
            cpu_ms = (tree_cpu_seconds(process.pid) - cpu_before) * 1000.0 / n
            after = await batch_stats(url)
            mean_batch = (after[0] - before[0]) / max(after[1] - before[1], 1.0)
            rows.append((concurrency, n / wall, level_errors, mean_batch, cpu_ms))
            errors += level_errors
        await run_requests(url, payload, 200, 16)
        rss_warm = tree_rss_bytes(process.pid)
        load_latencies, load_errors, load_wall = await run_requests(url, payload, args.load, 16)
        rss_end = tree_rss_bytes(process.pid)
        body = multipart_body(payload, workdir) if shutil.which("hey") else None
        served_hey = hey_rate(url, *body, args.throughput_requests, 16) if body else None
    finally:
        stop_server(process)
    floors = []
    if args.floor:
        for bare, label in ((False, "BentoML echo"), (True, "bare ASGI echo")):
            rates = await measure_floor(
                models, payload, args.throughput_requests, workdir, body, bare
            )
            floors.append((label, *rates))

    name, provider = model.manifest.name, model.onnx.provider
    print(f"sarveg serving benchmark: bundle {name} ({args.modality}), {provider}")
    source = f"{args.tile_file}" if args.tile_file else f"{side} px, uncompressed float32"
    print(
        f"tile {source} ({len(payload) / 1024:.0f} KiB) -> input {model.manifest.input_size} px, "
        "multipart upload"
    )
    if model.manifest.provenance.synthetic:
        print("bundle provenance: synthetic")
    print(f"\n{'latency (ms)':<34} {'served':>10} {'model':>10} {'added':>10}")
    for q in (50, 95):
        http_ms, raw_ms = percentile_ms(http_latencies, q), percentile_ms(raw_latencies, q)
        print(
            f"{f'p{q}, one tile, concurrency 1':<34} {http_ms:>10.2f} {raw_ms:>10.3f} "
            f"{http_ms - raw_ms:>10.2f}"
        )
    overhead = percentile_ms(http_latencies, 50) - percentile_ms(raw_latencies, 50)
    print(
        "added = served - bare model call: HTTP, upload, decoding, resampling, OOD block, JSON; "
        f"target p50 <= {TARGET_P50_OVERHEAD_MS:.0f} ms: "
        f"{'met' if overhead <= TARGET_P50_OVERHEAD_MS else 'NOT met'}"
    )
    print(
        f"\n{'throughput (tiles/s)':<20} {'served':>8} {'raw max':>8} {'ratio':>7} "
        f"{'batch':>6} {'raw @b':>8} {'ratio':>7} {'CPU ms/req':>11}"
    )
    for concurrency, tiles_per_s, _, mean_batch, cpu_ms in rows:
        formed = min(RAW_BATCHES, key=lambda b: abs(b - mean_batch))
        at_formed = raw_by_batch[formed]
        print(
            f"{f'concurrency {concurrency}':<20} {tiles_per_s:>8.1f} {raw_throughput:>8.1f} "
            f"{tiles_per_s / raw_throughput:>7.3f} {mean_batch:>6.2f} {at_formed:>8.1f} "
            f"{tiles_per_s / at_formed:>7.3f} {cpu_ms:>11.2f}"
        )
    print(
        "raw max: raw ORT at the max batch; raw @b: at the batch size nearest to the one the "
        "server formed; CPU ms/req: the server's processes' CPU time per request"
    )
    ratio16 = rows[-1][1] / raw_throughput
    print(
        f"raw ORT at batch {max_batch}; ratio target at concurrency 16 >= "
        f"{TARGET_THROUGHPUT_RATIO}: {'met' if ratio16 >= TARGET_THROUGHPUT_RATIO else 'NOT met'}"
    )
    if floors:
        print(f"\n{'HTTP floor, concurrency 16':<34} {'req/s':>10} {'bound':>10} {'served':>10}")
        for label, echo_rate, echo_hey in floors:
            clients = [("aiohttp", echo_rate, rows[-1][1])]
            if echo_hey is not None and served_hey is not None:
                clients.append(("hey", echo_hey, served_hey))
            for client, rate, served in clients:
                bound = rate / (rate + raw_throughput)
                print(
                    f"{f'{label}, {client}':<34} {rate:>10.1f} {bound:>10.3f} "
                    f"{served / raw_throughput:>10.3f}"
                )
        print(
            "bound = E / (E + raw): the best ratio a server could reach with that HTTP layer and "
            "the model sharing these cores, before decoding; served = the real /predict's ratio"
        )
    growth = (rss_end - rss_warm) / rss_warm
    print(
        f"\nload: {args.load} requests at concurrency 16 in {load_wall:.1f} s "
        f"({args.load / load_wall:.1f} req/s), p50 {percentile_ms(load_latencies, 50):.1f} ms, "
        f"p95 {percentile_ms(load_latencies, 95):.1f} ms"
    )
    print(
        f"errors {load_errors} (other phases {errors}); server RSS after warm-up "
        f"{rss_warm / 2**20:.1f} MiB, at the end {rss_end / 2**20:.1f} MiB, growth "
        f"{growth:+.1%} (target < {TARGET_RSS_GROWTH:.0%}): "
        f"{'met' if load_errors == 0 and growth < TARGET_RSS_GROWTH else 'NOT met'}"
    )
    return 0 if load_errors == 0 else 1


SANDBOX_TARGET = 0.90
BOMB_CLIENTS = 32


async def peak_rss_during(pid: int, work: asyncio.Future) -> int:
    """Highest RSS of the process tree, sampled every 20 ms until ``work`` is done."""
    peak = tree_rss_bytes(pid)
    while not work.done():
        peak = max(peak, tree_rss_bytes(pid))
        await asyncio.sleep(0.02)
    return peak


async def decoding_round(
    label: str,
    models: str,
    payload: bytes,
    workdir: Path,
    env: dict[str, str],
    root: Path,
    args: argparse.Namespace,
) -> dict[str, float]:
    """One server: p50 at concurrency 1, tiles/s at 16, RSS at rest and under the bomb."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(models, port, workdir / f"{label}.log", env, cwd=root)
    try:
        await wait_ready(url, process, 120.0)
        await run_requests(url, payload, 100, 16)  # warm-up
        latencies, errors, _ = await run_requests(url, payload, args.latency_requests, 1)
        _, errors16, wall = await run_requests(url, payload, args.throughput_requests, 16)
        await asyncio.sleep(1.0)
        at_rest = tree_rss_bytes(process.pid)
        bomb = asyncio.ensure_future(
            run_requests(url, sparse_bomb(), 4 * BOMB_CLIENTS, BOMB_CLIENTS)
        )
        peak = await peak_rss_during(process.pid, bomb)
        bomb_latencies, _, _ = bomb.result()
    finally:
        stop_server(process)
    if errors or errors16:
        raise RuntimeError(f"{label}: {errors + errors16} tile requests failed")
    return {
        "p50_ms": percentile_ms(latencies, 50),
        "tiles_per_s": args.throughput_requests / wall,
        "rss_rest_mb": at_rest / 2**20,
        "rss_bomb_mb": peak / 2**20,
        "bomb_p50_ms": percentile_ms(bomb_latencies, 50),
    }


async def compare_decoding(args: argparse.Namespace, models: str, workdir: Path) -> int:
    side = (
        args.tile_px
        or Predictor.from_paths(models, limits=IN_PROCESS)
        .model_for(args.modality)
        .manifest.source_tile_px
    )
    payload = (args.tile_file or make_tile(args.modality, side, workdir)).read_bytes()
    servers: list[tuple[str, dict[str, str], Path]] = []
    if args.before_ref:
        before = workdir / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(before), args.before_ref],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        servers.append((f"before ({args.before_ref})", {}, before))
    servers += [
        ("in-process decoding", {"SARVEG_DECODE_SANDBOX": "off"}, ROOT),
        ("child-process decoding", {"SARVEG_DECODE_SANDBOX": "on"}, ROOT),
    ]
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in servers}
    try:
        for _ in range(args.rounds):
            for label, env, root in servers:
                results[label].append(
                    await decoding_round(
                        label.split()[0], models, payload, workdir, env, root, args
                    )
                )
    finally:
        if args.before_ref:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(workdir / "before")],
                cwd=ROOT,
                check=False,
                capture_output=True,
            )
    print(
        f"decoding isolation: {models} ({args.modality}), tile {side} px "
        f"({len(payload) / 1024:.0f} KiB); medians of {args.rounds} alternating rounds, "
        f"{args.latency_requests} requests at concurrency 1, {args.throughput_requests} at 16"
    )
    header = (
        "server",
        "p50 ms (c=1)",
        "tiles/s (c=16)",
        "RSS rest MiB",
        "RSS bomb MiB",
        "bomb p50 ms",
    )
    print(f"{header[0]:<30}" + "".join(f"{h:>16}" for h in header[1:]))
    medians = {
        label: {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
        for label, rows in results.items()
    }
    for label, m in medians.items():
        print(
            f"{label:<30}{m['p50_ms']:>16.2f}{m['tiles_per_s']:>16.1f}{m['rss_rest_mb']:>16.0f}"
            f"{m['rss_bomb_mb']:>16.0f}{m['bomb_p50_ms']:>16.1f}"
        )
    ratio = (
        medians["child-process decoding"]["tiles_per_s"]
        / medians["in-process decoding"]["tiles_per_s"]
    )
    print(
        f"child / in-process throughput at concurrency 16: {ratio:.3f} (target >= "
        f"{SANDBOX_TARGET:.2f}: {'met' if ratio >= SANDBOX_TARGET else 'NOT met'})"
    )
    if args.before_ref:
        label = f"before ({args.before_ref})"
        child = medians["child-process decoding"]["tiles_per_s"]
        print(f"child / before throughput: {child / medians[label]['tiles_per_s']:.3f}")
    print(
        "RSS: the server's whole process tree (arbiter, worker, decoding children); 'bomb' is the "
        f"peak while {BOMB_CLIENTS} clients send {4 * BOMB_CLIENTS} header bombs"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--models", default=str(ROOT / "models"), help="SARVEG_MODELS value")
    source.add_argument("--tiny", action="store_true", help="use the torch-free test bundles")
    parser.add_argument("--modality", choices=bands.MODALITIES, default="s1grd")
    parser.add_argument("--load", type=int, default=2000, help="requests in the load test")
    parser.add_argument(
        "--tile-px", type=int, default=None, help="tile side (default: the bundle's source_tile_px)"
    )
    parser.add_argument(
        "--tile-file", type=Path, default=None, help="upload this GeoTIFF instead of a test tile"
    )
    parser.add_argument("--latency-requests", type=int, default=300)
    parser.add_argument("--throughput-requests", type=int, default=400)
    parser.add_argument(
        "--no-floor", dest="floor", action="store_false", help="skip the echo-service floor"
    )
    parser.add_argument(
        "--compare-decoding", action="store_true", help="in-process vs child-process decoding"
    )
    parser.add_argument("--before-ref", default=None, help="also serve this git commit's code")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sarveg-bench-") as tmp:
        workdir = Path(tmp)
        models = args.models
        if args.tiny:
            from testkit.bundles import build_bundles

            build_bundles(workdir / "models")
            models = str(workdir / "models")
        if args.compare_decoding:
            return asyncio.run(compare_decoding(args, models, workdir))
        return asyncio.run(measure(args, models, workdir))


if __name__ == "__main__":
    sys.exit(main())
