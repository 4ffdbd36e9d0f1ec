"""Moving a finished run from a local store to a shared server: ``run_chunks`` makes ``POST /v1/runs`` bodies.

A team evaluates on its own machine (``harness eval`` into its own store), then pushes the run to the shared
leaderboard. A run can hold thousands of PNGs, more than one request may carry, so it goes as chunks of at most
``max_bytes`` of images; every chunk repeats the run record, each score travels with its image, and the server
skips rows it already has, so an interrupted push is simply repeated.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.request
from collections.abc import Iterator
from typing import Any

from flowbase.errors import UnknownNameError
from results.store import Store

log = logging.getLogger(__name__)


def run_chunks(
    store: Store, run_id: str, max_bytes: int = 16 * 1024 * 1024
) -> Iterator[dict[str, Any]]:
    """``POST /v1/runs`` bodies for every sample and score of ``run_id``, each under ``max_bytes`` of base64 PNG."""
    run = store.get_run(run_id)
    if run is None:
        raise UnknownNameError(f"no run {run_id!r} in {store.path}")
    record = {
        "run_id": run.run_id,
        "model": run.model,
        "lora": run.lora,
        "protocol_version": run.protocol_version,
        "protocol": run.protocol,
        "provenance": run.provenance,
    }
    with store.session() as con:
        samples = con.execute(
            "SELECT step, benchmark, benchmark_version, prompt_id, prompt_index, prompt, meta, grp, "
            "image_index, seed, image_sha256, image_path FROM samples WHERE run_id = ? "
            "ORDER BY step, benchmark, prompt_index, image_index",
            [run_id],
        ).fetchall()
        scores = con.execute(
            "SELECT step, benchmark, benchmark_version, prompt_id, grp, image_index, scorer, "
            "scorer_version, value, reward, details FROM scores WHERE run_id = ?",
            [run_id],
        ).fetchall()
    by_image: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for c in scores:
        by_image.setdefault((c[0], c[1], c[3], c[5]), []).append(
            {
                "step": c[0],
                "benchmark": c[1],
                "benchmark_version": c[2],
                "prompt_id": c[3],
                "grp": c[4],
                "image_index": c[5],
                "scorer": c[6],
                "scorer_version": c[7],
                "value": c[8],
                "reward": c[9],
                "details": None if c[10] is None else json.loads(c[10]),
            }
        )
    chunk: dict[str, Any] = {"run": record, "samples": [], "scores": []}
    size = 0
    for s in samples:
        png = store.read_image(s[11], s[10])
        cost = (len(png) + 2) // 3 * 4  # its base64 length
        if chunk["samples"] and size + cost > max_bytes:
            yield chunk
            chunk, size = {"run": record, "samples": [], "scores": []}, 0
        chunk["samples"].append(
            {
                "step": s[0],
                "benchmark": s[1],
                "benchmark_version": s[2],
                "prompt_id": s[3],
                "prompt_index": s[4],
                "prompt": s[5],
                "meta": json.loads(s[6]),
                "grp": s[7],
                "image_index": s[8],
                "seed": s[9],
                "image_sha256": s[10],
                "image": base64.b64encode(png).decode("ascii"),
            }
        )
        chunk["scores"] += by_image.get((s[0], s[1], s[3], s[8]), [])
        size += cost
    if chunk["samples"] or not samples:
        yield chunk


def push_run(
    store: Store, run_id: str, url: str, token: str, max_bytes: int = 16 * 1024 * 1024
) -> dict[str, int]:
    """Send ``run_id`` to the server at ``url`` (``POST /v1/runs`` per chunk); totals of added and skipped rows."""
    totals = {"samples_added": 0, "scores_added": 0, "samples_skipped": 0, "scores_skipped": 0}
    for i, body in enumerate(run_chunks(store, run_id, max_bytes)):
        request = urllib.request.Request(
            url.rstrip("/") + "/v1/runs",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            answer = json.loads(response.read())
        for k in totals:
            totals[k] += int(answer[k])
        log.info("pushed chunk %d of %s: %s", i, run_id, answer)
    return totals
