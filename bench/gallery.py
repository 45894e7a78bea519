"""Gallery search at scale: latency over 100 000 subjects, top-1 of real identities, load time.

Usage: python bench/gallery.py [--subjects 100000] [--searches 500] [--distractors facelike|uniform] [--json]

Builds a SQLite database in a temporary directory with bulk inserts: ``--subjects``
synthetic subjects of one unit-norm embedding each, plus the real identities of
../shared/data/identity enrolled through the engine (first photo of each person, sorted
by name; the other photos are the probes). Then times ``load_gallery`` on that database,
``Gallery.search`` (k=5) with real probes and random queries, and checks that every
probe's top-1 subject is its own person.

Distractors: ``facelike`` (default) draws them around the mean of the real embeddings with
a spread calibrated so that two distractors lie as far apart as two different real people
(the hard case: they crowd the region real faces occupy); ``uniform`` draws them uniformly
on the sphere (easy: about sqrt(2) from every face).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from engine import machine as engine_machine  # noqa: E402

DATA = Path(os.environ.get("FACEPORT_TEST_DATA", REPO.parent / "shared" / "data"))
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
INSERT_BATCH = 5000


def machine() -> str:
    return engine_machine(f"numpy {np.__version__}")


def real_embeddings() -> dict[str, list[tuple[str, NDArray[np.float32], list[float], float]]]:
    """Per identity: (photo name, embedding, bbox, score) of each photo with exactly one face."""
    from faceport.engine.core import FaceEngine
    from faceport.engine.models import ModelCache, ModelStore

    models = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache/faceport/models")
    engine = FaceEngine(ModelCache(ModelStore(models), idle_ttl=0))
    people: dict[str, list[tuple[str, NDArray[np.float32], list[float], float]]] = {}
    for folder in sorted(p for p in (DATA / "identity").iterdir() if p.is_dir()):
        for photo in sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES):
            image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
            faces = engine.detect(np.asarray(image, np.uint8), embed=True) if image is not None else None
            if faces is None or len(faces) != 1 or faces.embedding is None:
                continue
            people.setdefault(folder.name, []).append(
                (photo.name, faces.embedding[0], faces.xyxy[0].tolist(), float(faces.score[0])))
    return people


def normalise(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.asarray(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), np.float32)


def median_pair_distance(vectors: NDArray[np.float32], rng: np.random.Generator, pairs: int = 4000) -> float:
    a = rng.integers(0, len(vectors), pairs)
    b = rng.integers(0, len(vectors), pairs)
    keep = a != b
    return float(np.median(np.linalg.norm(vectors[a[keep]] - vectors[b[keep]], axis=1)))


def distractors(kind: str, n: int, real: NDArray[np.float32], rng: np.random.Generator) -> tuple[
        NDArray[np.float32], float]:
    """``n`` unit-norm synthetic embeddings and the median distance between two of them."""
    dim = real.shape[1]
    if kind == "uniform":
        synthetic = normalise(rng.standard_normal((n, dim), dtype=np.float32))
        return synthetic, median_pair_distance(synthetic, rng)
    mean = real.mean(axis=0)
    target = median_pair_distance(real, rng)
    low, high = 1e-4, 1.0
    for _ in range(40):  # bisect the spread so that synthetic pairs lie as far apart as real people
        sigma = (low + high) / 2
        sample = normalise(mean + sigma * rng.standard_normal((2000, dim), dtype=np.float32))
        if median_pair_distance(sample, rng) < target:
            low = sigma
        else:
            high = sigma
    synthetic = normalise(mean + sigma * rng.standard_normal((n, dim), dtype=np.float32))
    return synthetic, median_pair_distance(synthetic, rng)


def build_database(url: str, synthetic: NDArray[np.float32],
                   enrolled: dict[str, tuple[NDArray[np.float32], list[float], float]]) -> float:
    """Bulk-insert the subjects and faces; returns seconds taken."""
    from sqlalchemy import insert

    from faceport.store import open_store
    from faceport.store.models import Subject, SubjectFace, utcnow

    store = open_store(url)
    started = time.perf_counter()
    now = utcnow()
    rows: list[tuple[str, NDArray[np.float32], list[float], float]] = [
        (f"synthetic-{i:06d}", vector, [0.0, 0.0, 100.0, 100.0], 0.9) for i, vector in enumerate(synthetic)]
    rows += [(name, vector, bbox, score) for name, (vector, bbox, score) in enrolled.items()]
    with store.session() as session:
        for start in range(0, len(rows), INSERT_BATCH):
            batch = rows[start:start + INSERT_BATCH]
            ids = [uuid.uuid4().hex for _ in batch]
            session.execute(insert(Subject), [
                {"id": sid, "name": name, "created_at": now, "updated_at": now}
                for sid, (name, _v, _b, _s) in zip(ids, batch, strict=True)])
            session.execute(insert(SubjectFace), [
                {"id": uuid.uuid4().hex, "subject_id": sid, "embedding": vector.astype("<f4").tobytes(),
                 "dim": int(vector.shape[0]), "model": "dlib_resnet", "bbox": bbox, "score": score,
                 "image_sha256": "0" * 64, "created_at": now}
                for sid, (_n, vector, bbox, score) in zip(ids, batch, strict=True)])
    store.dispose()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=100_000, help="synthetic subjects (one face each)")
    parser.add_argument("--searches", type=int, default=500, help="timed searches")
    parser.add_argument("--distractors", choices=("facelike", "uniform"), default="facelike")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep-db", type=Path, default=None,
                        help="write the gallery database here and keep it (for bench/api.py --gallery-db)")
    args = parser.parse_args()

    from faceport.services.gallery import load_gallery
    from faceport.store import open_store

    rng = np.random.default_rng(args.seed)
    people = real_embeddings()
    enrolled = {name: (photos[0][1], photos[0][2], photos[0][3]) for name, photos in people.items()}
    probes = [(name, photo, vector) for name, photos in people.items() for photo, vector, _b, _s in photos[1:]]
    real = np.stack([vector for vector, _b, _s in enrolled.values()])
    synthetic, synthetic_spread = distractors(args.distractors, args.subjects, real, rng)

    with tempfile.TemporaryDirectory(prefix="faceport-bench-gallery-") as tmp:
        db_path = args.keep_db.resolve() if args.keep_db else Path(tmp) / "gallery.db"
        db_path.unlink(missing_ok=True)
        url = f"sqlite:///{db_path}"
        build_s = build_database(url, synthetic, enrolled)
        db_mb = db_path.stat().st_size / 1e6
        store = open_store(url)
        started = time.perf_counter()
        gallery = load_gallery(store)
        load_s = time.perf_counter() - started

        correct = accepted = 0
        misses = []
        for name, photo, vector in probes:
            top = gallery.search(vector, k=1)
            correct += bool(top) and top[0].subject_name == name
            accepted += bool(top) and top[0].subject_name == name and top[0].distance <= 0.42
            if not top or top[0].subject_name != name:
                misses.append(f"{name}/{photo} -> {top[0].subject_name if top else None}")
        nearest_distractor = [float(np.min(np.linalg.norm(synthetic - vector, axis=1))) for _n, _p, vector in probes]

        queries = [vector for _n, _p, vector in probes]
        queries += list(normalise(rng.standard_normal((max(0, args.searches - len(queries)), real.shape[1]),
                                                      dtype=np.float32)))
        for query in queries[:10]:  # warm up caches and BLAS threads
            gallery.search(query, k=5)
        times = []
        for i in range(args.searches):
            query = queries[i % len(queries)]
            t = time.perf_counter()
            gallery.search(query, k=5)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()

        subject = gallery.create_subject("bench-added")
        from faceport.engine.types import Faces

        one = Faces(np.array([[0, 0, 10, 10]], np.float32), np.array([0.9], np.float32),
                    embedding=queries[0][None, :])
        t = time.perf_counter()
        added = [gallery.add_face(subject.id, "0" * 64, one) for _ in range(20)]
        add_ms = (time.perf_counter() - t) * 1000 / len(added)
        t = time.perf_counter()
        gallery.delete_face(subject.id, added[0].id)
        delete_ms = (time.perf_counter() - t) * 1000
        stats = gallery.stats()
        store.dispose()

    results = {
        "machine": machine(),
        "distractors": args.distractors,
        "gallery": stats,
        "real_identities": len(enrolled),
        "probes": len(probes),
        "build_db_s": round(build_s, 2),
        "db_mb": round(db_mb, 1),
        "load_gallery_s": round(load_s, 3),
        "search_k5_median_ms": round(statistics.median(times), 2),
        "search_k5_p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
        "top1_correct": correct,
        "top1_accepted_at_0.42": accepted,
        "misses": misses,
        "distractor_pair_median_distance": round(synthetic_spread, 3),
        "probe_nearest_distractor_min_distance": round(min(nearest_distractor), 3) if probes else None,
        "add_face_ms": round(add_ms, 2),
        "delete_face_ms": round(delete_ms, 2),
    }
    if args.json:
        print(json.dumps(results))
        return
    print(f"machine: {results['machine']}")
    print(f"gallery: {stats['subjects']} subjects, {stats['faces']} faces ({args.subjects} synthetic "
          f"{args.distractors} distractors, median pair distance {synthetic_spread:.3f}; "
          f"{len(enrolled)} real identities)")
    print(f"build database (bulk inserts):  {build_s:8.2f} s  ({db_mb:.1f} MB SQLite)")
    print(f"load_gallery at start:          {load_s:8.3f} s")
    print(f"search k=5, median of {args.searches}:     {results['search_k5_median_ms']:8.2f} ms")
    print(f"search k=5, p95:                {results['search_k5_p95_ms']:8.2f} ms")
    print(f"top-1 correct (real probes):    {correct}/{len(probes)}  "
          f"(accepted at distance <= 0.42: {accepted}/{len(probes)})")
    if probes:
        print(f"closest distractor to a probe:  {min(nearest_distractor):8.3f}")
    print(f"add_face on the loaded gallery: {add_ms:8.2f} ms  (store insert + index append)")
    print(f"delete_face:                    {delete_ms:8.2f} ms  (store delete + index copy)")
    for miss in misses:
        print(f"  miss: {miss}", file=sys.stderr)


if __name__ == "__main__":
    main()
