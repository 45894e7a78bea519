"""Celery job runner against the local runner: per-request overhead and throughput with 1 and 2 workers.

Usage: python bench/celery_jobs.py [--runs 15] [--jobs 16] [--json]

Job: seed E's privacy job on one photo (tests/fixtures/mpl_grace_hopper.jpg, faces blurred, plates,
text and audio off) — a short real job, so the runner's own cost shows.

- overhead: ``run_inline`` (how a request answered synchronously runs its job) on the local runner
  (in this process) and on the Celery runner (sent over Redis to one ``faceport worker`` subprocess,
  awaited through Redis), alternating the two ``--runs`` times after warm-up; medians, their
  difference, and the median of the paired differences.
- throughput: ``--jobs`` jobs submitted at once, seconds until the last completes, with 1 and then 2
  worker processes (concurrency 1 each); jobs per second.
- batch throughput: ``--batches`` seed D batches of ``--images`` shared identity photos each (operation
  ``detect``) submitted at once, images per second until the last batch completes, with 1 and 2 workers
  (a batch is one job: two workers help when two batches wait).

Needs Redis (``FACEPORT_TEST_REDIS_URL``) and PostgreSQL (``FACEPORT_TEST_POSTGRES_URL``; a fresh schema
is made and dropped). The local runner uses the same PostgreSQL schema.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from engine import machine  # noqa: E402

from tests.cluster import (  # noqa: E402
    clear_redis_keys,
    faceport_env,
    postgres_schema,
    require_redis,
    start_worker,
)

PHOTO = REPO / "tests" / "fixtures" / "mpl_grace_hopper.jpg"
CONFIG = {"video": {"face_detection": True, "plate_detection": False, "text_detection": False},
          "audio": {"enabled": False}}


def _context(settings: Any) -> Any:
    from faceport.api.context import AppContext

    context = AppContext.create(settings)
    context.start()
    return context


def _params(context: Any) -> dict[str, Any]:
    root = context.privacy.ensure_root()
    if not (root / "in.jpg").exists():
        shutil.copy(PHOTO, root / "in.jpg")
    return dict(context.privacy.validate("in.jpg", f"outputs/{uuid.uuid4().hex}.jpg", CONFIG))


def _inline_ms(context: Any) -> float:
    params = _params(context)
    started = time.perf_counter()
    record = context.jobs.run_inline("privacy.process", params)
    elapsed = (time.perf_counter() - started) * 1000
    assert record.state.value == "completed", record
    return elapsed


def _paired_inline_ms(local: Any, celery: Any, runs: int) -> tuple[list[float], list[float]]:
    """Alternate local and Celery runs, so that the machine's load weighs on both alike."""
    for _ in range(2):  # warm-up: models loaded in both processes
        _inline_ms(local), _inline_ms(celery)
    local_ms, celery_ms = [], []
    for index in range(runs):
        first, second = (local, celery) if index % 2 == 0 else (celery, local)
        a, b = _inline_ms(first), _inline_ms(second)
        local_ms.append(a if first is local else b)
        celery_ms.append(b if first is local else a)
    return local_ms, celery_ms


def _throughput(context: Any, jobs: int) -> float:
    params = [_params(context) for _ in range(jobs)]
    started = time.perf_counter()
    ids = [context.jobs.submit("privacy.process", p).id for p in params]
    for job_id in ids:
        record = context.jobs.wait_for(job_id, timeout=600)
        assert record.state.value == "completed", record
    return jobs / (time.perf_counter() - started)


def _batch_throughput(context: Any, batches: int, images: int) -> float:
    import io

    from faceport.services.batch import Source

    photos = sorted((REPO.parent / "shared" / "data" / "identity").rglob("*.jp*g"))[:images]
    ids = []
    started = time.perf_counter()
    for _ in range(batches):
        incoming = context.batch.incoming_folder()
        items = context.batch.stage([Source(path.name, "file", file=io.BytesIO(path.read_bytes())) for path in photos],
                                    incoming)
        record = context.batch.submit(owner="bench", operation="detect", options={}, params={},
                                      incoming=incoming, items=items)
        ids.append(record.id)
    for batch_id in ids:
        record = context.jobs.wait_for(batch_id, timeout=1200)
        assert record.state.value == "completed", record
    return batches * len(photos) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--images", type=int, default=16, help="images per batch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from faceport.config import Settings

    redis_url = require_redis()
    models_dir = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache" / "faceport" / "models")
    home = Path(tempfile.mkdtemp(prefix="faceport-bench-celery-"))
    queue = f"faceport-bench-{uuid.uuid4().hex[:8]}"
    workers = []
    out: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg()}
    try:
        with postgres_schema() as database_url:
            common = {"home": home, "models_dir": models_dir, "database_url": database_url, "redis_url": redis_url,
                      "celery_queue": queue, "pull_on_start": False, "model_idle_ttl": 0, "audit_log": "off",
                      "job_queue_max": 1000}
            base = {("models_dir_override" if k == "models_dir" else k): v for k, v in common.items()}
            env = faceport_env(**common, jobs="celery")
            workers.append(start_worker("bench-worker-1", env, home))
            local = _context(Settings(**base, jobs="local"))
            celery = _context(Settings(**base, jobs="celery"))
            try:
                local_ms, celery_ms = _paired_inline_ms(local, celery, args.runs)
                one = _throughput(celery, args.jobs)
                batch_one = _batch_throughput(celery, args.batches, args.images)
                workers.append(start_worker("bench-worker-2", env, home))
                for _ in range(4):  # both workers warm (each has loaded its models)
                    _inline_ms(celery)
                two = _throughput(celery, args.jobs)
                _batch_throughput(celery, 2, 2)  # the second worker loads the detector
                batch_two = _batch_throughput(celery, args.batches, args.images)
            finally:
                celery.close()
                local.close()
    finally:
        for worker in workers:
            worker.stop()
        clear_redis_keys(redis_url, "faceport:jobs:*")
        shutil.rmtree(home, ignore_errors=True)
    local_median, celery_median = statistics.median(local_ms), statistics.median(celery_ms)
    out.update({
        "runs": args.runs, "jobs": args.jobs,
        "local_inline_ms_median": round(local_median, 1), "celery_inline_ms_median": round(celery_median, 1),
        "celery_overhead_ms": round(celery_median - local_median, 1),
        "celery_over_local_ratio": round(celery_median / local_median, 2),
        "paired_difference_ms_median": round(statistics.median(c - lo for c, lo in zip(celery_ms, local_ms,
                                                                                         strict=True)), 1),
        "throughput_jobs_per_s_1_worker": round(one, 2), "throughput_jobs_per_s_2_workers": round(two, 2),
        "two_over_one_ratio": round(two / one, 2),
        "batch_images_per_s_1_worker": round(batch_one, 2), "batch_images_per_s_2_workers": round(batch_two, 2),
        "batch_two_over_one_ratio": round(batch_two / batch_one, 2), "load_after": os.getloadavg(),
    })
    if args.json:
        print(json.dumps(out))
        return
    for key, value in out.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
