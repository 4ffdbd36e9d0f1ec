"""A bounded load test of the service on loopback: requests per second and p50 / p99 latency.

Phases (each a fixed number of requests from a fixed number of client threads, and a time cap):

- ``reads``: ``GET /v1/leaderboard/geneval`` over a store of ``--runs`` mini runs, with the read cache (the
  default) and without it (every request opens the DuckDB file and runs the SQL views), and ``GET /health`` as
  the floor of the HTTP stack itself;
- ``score``: one-image ``POST /v1/score`` requests from ``--clients`` concurrent clients (rollout workers), with
  batching on and off, for two scorers: ``fixed_cost``, a stand-in for a GPU model whose call costs about the same
  for 1 image as for 32 (``--call-ms`` per call plus 0.2 ms per image), and ``mini_geneval``, a real CPU scorer
  whose cost grows with the images;
- ``writes``: ``--runs`` runs pushed concurrently as ``POST /v1/runs`` chunks, every chunk sent twice by different
  clients in shuffled order while other clients read, then every run checked row by row against its source:
  lost or duplicated rows are counted (both must be 0).

The server runs in its own process (``uvicorn``, one worker), the clients in this one; both share this machine's
cores, so absolute numbers are a floor. Nothing leaves 127.0.0.1.

    PYTHONPATH=. python bench/service_load.py [--runs 12] [--clients 16] [--requests 320] [--call-ms 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from result_lines import emit  # noqa: E402  (bench/, the script's own folder)

TOKEN = "bench-token-0123456789abcdef"
TIME_CAP = 120.0  # seconds per phase, whatever the counts say


class FixedCost:
    """A GPU-like scorer: each call sleeps ``call_ms`` plus 0.2 ms per image; value = mean pixel / 255."""

    name = "fixed_cost"
    version = "1"

    def __init__(self, call_ms: float) -> None:
        from scorers.base import Requirements

        self.requires = Requirements(gpu_gb=1.0)
        self.call_s = call_ms / 1000

    def __call__(self, images: list[Any], prompts: list[str], meta: Any = None) -> Any:
        from PIL import ImageStat

        from scorers.base import Scores

        time.sleep(self.call_s + 0.0002 * len(images))
        values = [sum(ImageStat.Stat(im.convert("RGB")).mean) / 765 for im in images]
        return Scores(values, values, None)


# --- the server process -------------------------------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    """Run the server (in the child process) and print its URL."""
    import logging

    import uvicorn

    from scorers.mini import MiniGenEval
    from service.app import create_app
    from service.settings import Settings

    logging.basicConfig(level=logging.WARNING)
    token = Path(args.store).parent / "token"
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text(TOKEN)
    token.chmod(0o600)
    settings = Settings(
        store=args.store,
        token_file=token,
        batching=args.batching == "on",
        read_cache=args.cache == "on",
        max_images=64,
    )
    app = create_app(
        settings, {"fixed_cost": FixedCost(args.call_ms), "mini_geneval": MiniGenEval()}
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started:
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        print(f"URL http://127.0.0.1:{port}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run()


class Server:
    """The server in a subprocess, for one configuration."""

    def __init__(self, store: Path, call_ms: float, batching: bool, cache: bool) -> None:
        cmd = [sys.executable, __file__, "--child", "--store", str(store), "--call-ms", str(call_ms),
               "--batching", "on" if batching else "off", "--cache", "on" if cache else "off"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        m = re.match(r"URL (\S+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.url = m.group(1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


# --- load -------------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    note: str = ""

    def row(self) -> str:
        lat = sorted(self.latencies)
        q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
        return (
            f"| {self.name} | {self.requests} | {self.errors} | {self.requests / self.seconds:.1f} | "
            f"{q[49] * 1000:.1f} | {q[98] * 1000:.1f} | {self.note} |"
        )


def load(
    name: str, url: str, clients: int, requests: int, make: Callable[[int], tuple[str, str, Any]]
) -> Result:
    """``requests`` calls of ``make(i) -> (method, path, json)`` from ``clients`` threads."""
    import httpx

    counter = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + TIME_CAP

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                method, path, body = make(i)
                t0 = time.perf_counter()
                r = http.request(
                    method, path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}
                )
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if r.status_code >= 300:
                        errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if errors:
        print(f"{name}: {len(errors)} errors, first: {errors[0]}", file=sys.stderr)
    return Result(name, len(latencies), len(errors), seconds, latencies)


def scorer_calls(url: str, name: str) -> tuple[int, int]:
    import httpx

    info = {s["name"]: s for s in httpx.get(f"{url}/v1/scorers").json()}[name]
    return info["requests"], info["calls"]


# --- phases -----------------------------------------------------------------------------------------


def build_store(path: Path, runs: int) -> None:
    from results.store import Store
    from tests.support.service_data import add_mini_run

    store = Store(path)
    for i in range(runs):
        add_mini_run(
            store, f"run{i:02d}", model=f"mini-{i}", skill=(i + 1) / runs, prompts=12, seed=i
        )


def phase_reads(store: Path, args: argparse.Namespace) -> list[Result]:
    out = []
    for cache in (True, False):
        server = Server(store, args.call_ms, True, cache)
        try:
            n = args.requests * (3 if cache else 1)
            if cache:  # the floor: the same stack with no work behind it
                out.append(load("GET /health (floor)", server.url, 8, n,
                                lambda i: ("GET", "/health", None)))  # fmt: skip
            r = load(f"leaderboard read, cache {'on' if cache else 'off'}", server.url, 8, n,
                     lambda i: ("GET", "/v1/leaderboard/geneval", None))  # fmt: skip
            out.append(r)
        finally:
            server.stop()
    return out


def phase_score(store: Path, args: argparse.Namespace) -> list[Result]:
    from tests.support.service_data import b64, draw, mini_prompts

    rng = random.Random(0)
    metas = mini_prompts(64, seed=1)
    images = [b64(draw(m, rng.random() < 0.5, rng).resize((256, 256))) for m in metas]
    out = []
    for scorer in ("fixed_cost", "mini_geneval"):
        for batching in (False, True):
            server = Server(store, args.call_ms, batching, True)
            try:

                def make(i: int, scorer: str = scorer) -> tuple[str, str, Any]:
                    k = i % len(images)
                    meta = [metas[k]] if scorer == "mini_geneval" else None
                    body = {"scorer": scorer, "images": [images[k]], "prompts": [metas[k]["prompt"]],
                            "meta": meta}  # fmt: skip
                    return "POST", "/v1/score", body

                r = load(f"score {scorer}, batching {'on' if batching else 'off'}", server.url,
                         args.clients, args.requests, make)  # fmt: skip
                req, calls = scorer_calls(server.url, scorer)
                r.note = f"{calls} scorer calls for {req} requests"
                out.append(r)
            finally:
                server.stop()
    return out


def phase_writes(tmp: Path, args: argparse.Namespace) -> tuple[list[Result], str]:
    import httpx

    from results.store import Store
    from service.bundle import run_chunks
    from tests.support.service_data import add_mini_run

    local = Store(tmp / "local" / "results.duckdb")
    for i in range(args.runs):
        add_mini_run(
            local, f"push{i:02d}", model=f"pushed-{i}", skill=0.5, prompts=12, seed=100 + i
        )
    chunks = [c for i in range(args.runs) for c in run_chunks(local, f"push{i:02d}", 20_000)]
    jobs = chunks + chunks  # every chunk twice: duplicates must be skipped, never stored twice
    random.Random(0).shuffle(jobs)
    server = Server(tmp / "shared" / "results.duckdb", args.call_ms, True, True)
    try:
        stop = threading.Event()
        reads: list[int] = []

        def reader() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as http:
                while not stop.is_set():
                    reads.append(http.get("/v1/leaderboard/geneval").status_code)

        rt = threading.Thread(target=reader)
        rt.start()
        r = load("import chunks (each sent twice)", server.url, 8, len(jobs),
                 lambda i: ("POST", "/v1/runs", jobs[i]))  # fmt: skip
        stop.set()
        rt.join()
        lost = dup = 0
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for i in range(args.runs):
                rid = f"push{i:02d}"
                want = {
                    (
                        s["step"],
                        s["benchmark"],
                        s["prompt_id"],
                        s["image_index"],
                        c["scorer"],
                        c["value"],
                    )
                    for s in local.sample_scores(rid)
                    for c in [s]
                }
                got: list[tuple[Any, ...]] = []
                offset: int | None = 0
                while offset is not None:
                    page = http.get(
                        f"/v1/runs/{rid}/samples", params={"offset": offset, "limit": 500}
                    ).json()
                    got += [(s["step"], s["benchmark"], s["prompt_id"], s["image_index"], c["scorer"],
                             c["value"]) for s in page["samples"] for c in s["scores"]]  # fmt: skip
                    offset = page["next_offset"]
                lost += len(want - set(got))
                dup += len(got) - len(set(got))
        bad_reads = sum(1 for s in reads if s != 200)
        r.note = f"{len(chunks)} chunks; {len(reads)} concurrent reads, {bad_reads} not 200"
        verdict = f"writes: {lost} lost rows, {dup} duplicated rows over {args.runs} runs"
        return [r], verdict
    finally:
        server.stop()


def main() -> None:
    """Run the phases and print a Markdown table."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=12)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=320)
    p.add_argument("--call-ms", type=float, default=20.0)
    p.add_argument("--only", nargs="*", default=["reads", "score", "writes"])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--batching", default="on", help=argparse.SUPPRESS)
    p.add_argument("--cache", default="on", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results: list[Result] = []
    verdict = ""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        store = tmp / "board" / "results.duckdb"
        t0 = time.perf_counter()
        build_store(store, args.runs)
        print(f"store: {args.runs} runs built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if "reads" in args.only:
            results += phase_reads(store, args)
        if "score" in args.only:
            results += phase_score(store, args)
        if "writes" in args.only:
            rs, verdict = phase_writes(tmp, args)
            results += rs
    print(f"cpu cores: {os.cpu_count()}; clients: {args.clients} (reads, imports: 8); "
          f"fixed_cost call: {args.call_ms:g} ms\n")  # fmt: skip
    print("| phase | requests | errors | req/s | p50 ms | p99 ms | note |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        print(r.row())
    if verdict:
        print(f"\n{verdict}")
    print(json.dumps({"lost_or_duplicated": verdict}), file=sys.stderr)
    emit(
        {
            re.sub(r"\W+", "_", r.name).strip("_"): {
                "req_per_s": r.requests / r.seconds,
                "errors": r.errors,
                "p50_ms": 1000 * statistics.median(r.latencies) if r.latencies else float("nan"),
            }
            for r in results
        }
        | {
            f"writes_{kind}_rows": int(n)
            for n, kind in re.findall(r"(\d+) (lost|duplicated) rows", verdict)
        }
    )


if __name__ == "__main__":
    main()
