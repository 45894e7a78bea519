"""Gallery service: the in-memory index against the store, best-per-subject search, restarts, threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from faceport.engine.types import Faces
from faceport.errors import FaceportError, InvalidInput, NoFace, NotFound
from faceport.principal import Principal
from faceport.services import gallery as gallery_module
from faceport.services.gallery import Gallery, Match, image_sha256, load_gallery, owner_scope
from faceport.store import Store, open_store
from faceport.store import gallery as repo

SHA = "cd" * 32
OWNER = "0a" * 16  # a user id


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'gallery.db'}")
    try:
        yield opened
    finally:
        opened.dispose()


@pytest.fixture
def gallery(store: Store, monkeypatch: pytest.MonkeyPatch) -> Gallery:
    """A gallery whose buffers start tiny, so tests exercise growing them (and readers during growth)."""
    monkeypatch.setattr(gallery_module, "_MIN_CAPACITY", 2)
    return load_gallery(store)


def _unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def _faces(*embeddings: np.ndarray) -> Faces:
    n = len(embeddings)
    return Faces(np.tile(np.array([[10, 20, 110, 140]], np.float32), (n, 1)), np.full(n, 0.9, np.float32),
                 embedding=np.stack(embeddings).astype(np.float32) if n else np.zeros((0, 128), np.float32))


def _near(center: np.ndarray, rng: np.random.Generator, spread: float = 0.05) -> np.ndarray:
    """A unit vector about ``spread`` away from the unit vector ``center`` (at most ``spread``)."""
    return _unit(center + spread * _unit(rng.standard_normal(center.shape[0])))


def brute_force(store: Store, query: np.ndarray, k: int, owner: str | None = None) -> list[tuple[str, str, str]]:
    """Reference answer read from the store: (subject id, name, face id) of the k best subjects (of ``owner``)."""
    query = _unit(query)
    best: dict[str, tuple[float, str, str]] = {}
    with store.session() as session:
        subjects, _ = repo.list_subjects(session=session, page=1, size=1000, owner=owner)
        for subject in subjects:
            for face in repo.list_faces(session=session, subject_id=subject.id):
                distance = float(np.linalg.norm(_unit(face.embedding) - query))
                if subject.id not in best or (distance, face.id) < best[subject.id][:2]:
                    best[subject.id] = (distance, face.id, subject.name)
    ranked = sorted(best.items(), key=lambda item: (item[1][0], item[1][1]))[:k]
    return [(subject_id, name, face_id) for subject_id, (_d, face_id, name) in ranked]


def _ids(matches: list[Match]) -> list[tuple[str, str, str]]:
    return [(m.subject_id, m.subject_name, m.face_id) for m in matches]


def test_best_face_per_subject_sorted_and_top_k(gallery: Gallery) -> None:
    rng = np.random.default_rng(0)
    query = _unit(rng.standard_normal(128))
    ada, grace, alan = (gallery.create_subject(name, owner=OWNER) for name in ("Ada", "Grace", "Alan"))
    # Ada has the two closest faces: she must appear once, with the closer one.
    ada_near = gallery.add_face(ada.id, SHA, _faces(_near(query, rng, 0.02)))
    gallery.add_face(ada.id, SHA, _faces(_near(query, rng, 0.05)))
    grace_face = gallery.add_face(grace.id, SHA, _faces(_near(query, rng, 0.2)))
    gallery.add_face(grace.id, SHA, _faces(_unit(rng.standard_normal(128))))
    gallery.add_face(alan.id, SHA, _faces(_unit(rng.standard_normal(128))))

    matches = gallery.search(query, k=5)
    assert [m.subject_name for m in matches] == ["Ada", "Grace", "Alan"]
    assert matches[0].face_id == ada_near.id and matches[1].face_id == grace_face.id
    assert [m.distance for m in matches] == sorted(m.distance for m in matches)
    for m in matches:
        assert m.similarity == pytest.approx(1 - m.distance / 2)
    assert matches[0].distance == pytest.approx(float(np.linalg.norm(ada_near.embedding - query)), abs=1e-5)
    assert _ids(gallery.search(query, k=2)) == _ids(matches[:2])
    within = gallery.search(query, k=5, threshold=0.42)
    assert [m.subject_name for m in within] == ["Ada", "Grace"]
    assert gallery.stats() == {"subjects": 3, "faces": 5} and gallery.size == 5


def test_a_subject_with_many_close_faces_does_not_hide_the_others(gallery: Gallery) -> None:
    """The first candidate pass finds only one subject; later passes must widen until k are found."""
    rng = np.random.default_rng(1)
    query = _unit(rng.standard_normal(128))
    crowd = gallery.create_subject("crowd", owner=OWNER)
    for _ in range(60):
        gallery.add_face(crowd.id, SHA, _faces(_near(query, rng, 0.01)))
    others = [gallery.create_subject(f"other-{i}", owner=OWNER) for i in range(3)]
    for subject in others:
        gallery.add_face(subject.id, SHA, _faces(_unit(rng.standard_normal(128))))
    matches = gallery.search(query, k=3)
    assert matches[0].subject_name == "crowd"
    assert len({m.subject_id for m in matches}) == 3
    assert _ids(matches) == brute_force(gallery.store, query, 3)


def test_index_stays_in_sync_with_the_store_through_every_kind_of_change(gallery: Gallery, store: Store) -> None:
    rng = np.random.default_rng(2)
    queries = [_unit(rng.standard_normal(128)) for _ in range(5)]
    subjects = [gallery.create_subject(f"person-{i}", owner=OWNER) for i in range(6)]
    faces: dict[str, list[str]] = {s.id: [] for s in subjects}

    def check(step: str) -> None:
        for query in queries:
            assert _ids(gallery.search(query, k=4)) == brute_force(store, query, 4), step
        with store.session() as session:
            expected = {"subjects": repo.count_subjects(session=session), "faces": repo.count_faces(session=session)}
        assert gallery.stats() == expected, step

    for subject in subjects:
        for query in queries[:3]:
            faces[subject.id].append(gallery.add_face(subject.id, SHA, _faces(_near(query, rng, 0.3))).id)
    check("add faces")
    gallery.delete_face(subjects[0].id, faces[subjects[0].id][0])
    faces[subjects[0].id].pop(0)
    check("delete a face")
    for face_id in faces[subjects[1].id]:
        gallery.delete_face(subjects[1].id, face_id)
    check("delete every face of a subject")
    renamed = gallery.rename_subject(subjects[2].id, "renamed")
    assert renamed.name == "renamed"
    check("rename")
    assert any(m.subject_name == "renamed" for q in queries for m in gallery.search(q, k=6))
    gallery.delete_subject(subjects[3].id)
    check("delete a subject")
    assert all(m.subject_id != subjects[3].id for q in queries for m in gallery.search(q, k=6))
    late = gallery.create_subject("late", owner=OWNER)
    check("create a subject")
    gallery.add_face(late.id, SHA, _faces(queries[4]))
    check("add after deletes")
    assert gallery.search(queries[4], k=1)[0].subject_name == "late"


def test_failed_changes_leave_the_index_alone(gallery: Gallery) -> None:
    rng = np.random.default_rng(3)
    ada = gallery.create_subject("Ada", owner=OWNER)
    gallery.add_face(ada.id, SHA, _faces(_unit(rng.standard_normal(128))))
    before = gallery.stats()
    query = _unit(rng.standard_normal(128))
    with pytest.raises(NoFace):
        gallery.add_face(ada.id, SHA, _faces())
    with pytest.raises(InvalidInput, match="several faces; send an image with exactly one") as several:
        gallery.add_face(ada.id, SHA, _faces(query, query))
    assert several.value.details["faces"] == 2
    with pytest.raises(InvalidInput, match=r"shape \(128,\)"):
        gallery.add_face(ada.id, SHA, _faces(np.ones(64, np.float32)))
    with pytest.raises(InvalidInput, match="no embedding"):
        gallery.add_face(ada.id, SHA, Faces(np.zeros((1, 4), np.float32), np.ones(1, np.float32)))
    with pytest.raises(NotFound):
        gallery.add_face("0" * 32, SHA, _faces(query))
    with pytest.raises(InvalidInput):
        gallery.create_subject("Ada", owner=OWNER)
    with pytest.raises(NotFound):
        gallery.delete_face(ada.id, "0" * 32)
    with pytest.raises(NotFound):
        gallery.delete_subject("0" * 32)
    assert gallery.stats() == before
    assert len(gallery.list_faces(ada.id)) == 1
    assert gallery.search(query, k=5)[0].subject_name == "Ada"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be"),
        ({"k": 1001}, "k must be"),
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": 2.5}, "threshold"),
        ({"embedding": np.ones(64, np.float32)}, "shape"),
        ({"embedding": np.zeros(128, np.float32)}, "non-zero"),
        ({"embedding": np.full(128, np.nan, np.float32)}, "finite"),
    ],
)
def test_search_refuses_bad_queries(gallery: Gallery, kwargs: dict, message: str) -> None:
    args = {"embedding": np.ones(128, np.float32), **kwargs}
    with pytest.raises(InvalidInput, match=message):
        gallery.search(**args)


def test_empty_gallery_finds_nothing(gallery: Gallery) -> None:
    assert gallery.search(np.ones(128, np.float32)) == []
    gallery.create_subject("faceless", owner=OWNER)
    assert gallery.search(np.ones(128, np.float32)) == []
    assert gallery.stats() == {"subjects": 1, "faces": 0}


def test_subject_embeddings(gallery: Gallery) -> None:
    rng = np.random.default_rng(4)
    ada = gallery.create_subject("Ada", owner=OWNER)
    vectors = [_unit(rng.standard_normal(128)) for _ in range(2)]
    for vector in vectors:
        gallery.add_face(ada.id, SHA, _faces(vector))
    np.testing.assert_allclose(gallery.subject_embeddings(ada.id), np.stack(vectors), atol=1e-6)
    assert gallery.subject_embeddings(gallery.create_subject("faceless", owner=OWNER).id).shape == (0, 128)
    with pytest.raises(NotFound):
        gallery.subject_embeddings("0" * 32)


def test_a_restart_gives_identical_results(store: Store, gallery: Gallery) -> None:
    rng = np.random.default_rng(5)
    subjects = [gallery.create_subject(f"p{i}", owner=OWNER) for i in range(40)]
    for subject in subjects:
        for _ in range(int(rng.integers(1, 4))):
            gallery.add_face(subject.id, SHA, _faces(_unit(rng.standard_normal(128))))
    gallery.delete_subject(subjects[0].id)
    gallery.rename_subject(subjects[1].id, "renamed before restart")
    queries = [_unit(rng.standard_normal(128)) for _ in range(25)]
    before = [gallery.search(q, k=7) for q in queries]

    restarted = load_gallery(open_store(store.engine.url))
    assert restarted.stats() == gallery.stats() == {"subjects": 39, "faces": gallery.size}
    for query, expected in zip(queries, before, strict=True):
        got = restarted.search(query, k=7)
        assert _ids(got) == _ids(expected)
        np.testing.assert_allclose([m.distance for m in got], [m.distance for m in expected], atol=1e-6)
    restarted.store.dispose()


def test_concurrent_adds_and_deletes_while_searching(gallery: Gallery) -> None:
    """Readers never raise, never see a face under another subject's id or name, and always see committed faces."""
    rng = np.random.default_rng(6)
    n_subjects = 24
    centers = {}
    names = {}
    for i in range(n_subjects):
        subject = gallery.create_subject(f"subject-{i}", owner=OWNER)
        centers[subject.id] = _unit(rng.standard_normal(128))
        names[subject.id] = subject.name
    churn = gallery.create_subject("churn", owner=OWNER)  # faces added and deleted again, to exercise the copying path
    centers[churn.id], names[churn.id] = _unit(rng.standard_normal(128)), "churn"
    subject_ids = [s for s in centers if s != churn.id]
    committed: list[tuple[str, np.ndarray]] = []  # (subject id, embedding) of adds that have returned
    errors: list[Exception] = []
    stop = threading.Event()
    spread = 0.05

    def writer(seed: int) -> None:
        local = np.random.default_rng(seed)
        try:
            for _ in range(40):
                subject_id = subject_ids[int(local.integers(len(subject_ids)))]
                vector = _near(centers[subject_id], local, spread)
                gallery.add_face(subject_id, SHA, _faces(vector))
                committed.append((subject_id, vector))
        except Exception as exc:  # reported by the test thread
            errors.append(exc)

    def churner() -> None:
        local = np.random.default_rng(99)
        try:
            while not stop.is_set():
                face = gallery.add_face(churn.id, SHA, _faces(_near(centers[churn.id], local, spread)))
                gallery.delete_face(churn.id, face.id)
        except Exception as exc:
            errors.append(exc)

    searches = [0]

    def reader(seed: int) -> None:
        local = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                seen = list(committed)
                if seen and local.random() < 0.5:
                    subject_id, vector = seen[int(local.integers(len(seen)))]
                    top = gallery.search(vector, k=1)
                    assert top and top[0].subject_id == subject_id and top[0].distance < 1e-4, (top, subject_id)
                    continue
                query = _unit(local.standard_normal(128))
                matches = gallery.search(query, k=5)
                searches[0] += 1
                assert len({m.subject_id for m in matches}) == len(matches) <= 5
                assert [m.distance for m in matches] == sorted(m.distance for m in matches)
                for m in matches:
                    assert m.subject_name == names[m.subject_id]
                    # A face reported under a subject lies near that subject's centre: rows and owners agree.
                    expected = float(np.linalg.norm(query - centers[m.subject_id]))
                    assert abs(m.distance - expected) < 3 * spread, (m, expected)
        except Exception as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(seed,)) for seed in range(3)]
    others = [threading.Thread(target=churner)] + [threading.Thread(target=reader, args=(100 + i,)) for i in range(3)]
    for thread in writers + others:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
    time.sleep(0.05)
    stop.set()
    for thread in others:
        thread.join(timeout=60)
    assert not errors, errors[:3]
    assert searches[0] > 0
    assert gallery.stats()["faces"] == 3 * 40
    for subject_id, vector in committed:
        assert gallery.search(vector, k=1)[0].subject_id == subject_id
    restarted = load_gallery(gallery.store)
    query = _unit(rng.standard_normal(128))
    assert _ids(restarted.search(query, k=10)) == _ids(gallery.search(query, k=10))


def test_image_sha256_names_the_pixels() -> None:
    image = np.zeros((4, 5, 3), np.uint8)
    assert image_sha256(image) == image_sha256(image.copy())
    assert len(image_sha256(image)) == 64
    changed = image.copy()
    changed[0, 0, 0] = 1
    assert image_sha256(changed) != image_sha256(image)
    assert image_sha256(image[:, ::-1]) == image_sha256(np.ascontiguousarray(image[:, ::-1]))


# --- owners ----------------------------------------------------------------------------

ALICE, BOB, SERVICE = "a1" * 16, "b0" * 16, "key:" + "c" * 32


def test_each_owner_searches_only_their_own_subjects_through_every_change(gallery: Gallery, store: Store) -> None:
    """The same faces enrolled by two owners: each finds only theirs; admins (owner=None) find both."""
    rng = np.random.default_rng(10)
    queries = [_unit(rng.standard_normal(128)) for _ in range(4)]
    subjects = {owner: [gallery.create_subject(name, owner=owner) for name in ("alice", "bob", "carol")]
                for owner in (ALICE, BOB, SERVICE)}
    faces: dict[str, list[str]] = {}
    for owner, owned in subjects.items():
        for subject in owned:
            faces[subject.id] = [gallery.add_face(subject.id, SHA, _faces(_near(q, rng, 0.3)), owner=owner).id
                                 for q in queries[:2]]
    gallery.create_subject("faceless", owner=BOB)

    def check(step: str) -> None:
        for query in queries:
            for owner in (ALICE, BOB, SERVICE):
                got = gallery.search(query, k=5, owner=owner)
                assert _ids(got) == brute_force(store, query, 5, owner), (step, owner)
                assert {m.subject_id for m in got} <= {s.id for s in subjects[owner]}, (step, owner)
            assert _ids(gallery.search(query, k=9)) == brute_force(store, query, 9), step
        with store.session() as session:
            for owner in (ALICE, BOB, SERVICE):
                stored = sum(len(repo.list_faces(session=session, subject_id=s.id)) for s in subjects[owner])
                assert gallery.stats(owner=owner) == {
                    "subjects": repo.count_subjects(session=session, owner=owner), "faces": stored}, (step, owner)
                # The index keeps each owner's rows apart: a search costs that owner's faces only.
                assert len(gallery._snapshot.owner_rows.get(owner, [])) == stored
            total = {"subjects": repo.count_subjects(session=session), "faces": repo.count_faces(session=session)}
        assert gallery.stats() == total, step

    check("enrolled")
    assert gallery.stats(owner="nobody") == {"subjects": 0, "faces": 0}
    assert gallery.search(queries[0], owner="nobody") == []
    gallery.delete_face(subjects[ALICE][0].id, faces[subjects[ALICE][0].id][0], owner=ALICE)
    check("delete a face")
    gallery.rename_subject(subjects[BOB][1].id, "robert", owner=BOB)
    check("rename")
    gallery.delete_subject(subjects[SERVICE][2].id, owner=SERVICE)
    subjects[SERVICE].pop()
    check("delete a subject")
    late = gallery.create_subject("late", owner=ALICE)
    subjects[ALICE].append(late)
    gallery.add_face(late.id, SHA, _faces(queries[3]), owner=ALICE)
    assert gallery.search(queries[3], k=1, owner=ALICE)[0].subject_id == late.id
    assert all(m.subject_id != late.id for m in gallery.search(queries[3], k=9, owner=BOB))
    check("add after deletes")
    restarted = load_gallery(gallery.store)
    for query in queries:
        for owner in (ALICE, BOB, SERVICE, None):
            assert _ids(restarted.search(query, k=5, owner=owner)) == _ids(gallery.search(query, k=5, owner=owner))
        assert restarted.stats(owner=BOB) == gallery.stats(owner=BOB)


def test_another_owners_subject_is_not_found_and_left_alone(gallery: Gallery) -> None:
    rng = np.random.default_rng(11)
    theirs = gallery.create_subject("alice", owner=ALICE)
    face = gallery.add_face(theirs.id, SHA, _faces(_unit(rng.standard_normal(128))), owner=ALICE)
    mine = gallery.create_subject("alice", owner=BOB)  # names are unique per owner only
    before = (gallery.stats(), gallery.stats(owner=ALICE), gallery.stats(owner=BOB))
    attempts = [
        lambda: gallery.get_subject(theirs.id, owner=BOB),
        lambda: gallery.rename_subject(theirs.id, "mallory", owner=BOB),
        lambda: gallery.delete_subject(theirs.id, owner=BOB),
        lambda: gallery.add_face(theirs.id, SHA, _faces(_unit(rng.standard_normal(128))), owner=BOB),
        lambda: gallery.list_faces(theirs.id, owner=BOB),
        lambda: gallery.delete_face(theirs.id, face.id, owner=BOB),
        lambda: gallery.subject_embeddings(theirs.id, owner=BOB),
    ]
    for attempt in attempts:
        with pytest.raises(NotFound) as refused:
            attempt()
        assert refused.value.code == "NOT_FOUND" and theirs.id in refused.value.message
    assert (gallery.stats(), gallery.stats(owner=ALICE), gallery.stats(owner=BOB)) == before
    assert gallery.get_subject(theirs.id, owner=ALICE).name == "alice"
    assert gallery.subject_embeddings(theirs.id, owner=ALICE).shape == (1, 128)
    assert gallery.subject_embeddings(theirs.id).shape == (1, 128)  # admins: every owner
    assert gallery.subject_embeddings(mine.id, owner=BOB).shape == (0, 128)
    assert gallery.search(face.embedding, k=3, owner=BOB) == []
    with pytest.raises(InvalidInput):
        gallery.create_subject(" alice ", owner=BOB)


def _principal(role: str = "user", user_id: str | None = ALICE, key: str | None = None) -> Principal:
    return Principal(user_id=user_id, username="x", role=role,  # type: ignore[arg-type]
                     method="jwt" if key is None else "api_key", token_id=key)


@pytest.mark.parametrize(
    ("principal", "asked", "scope"),
    [
        (_principal(), None, ALICE),
        (_principal(), ALICE, ALICE),
        (_principal(user_id=ALICE, key="k1"), None, ALICE),  # a key acting for a user shares the user's subjects
        (_principal(user_id=None, key="c" * 32), None, SERVICE),  # a service key owns its own
        (_principal(user_id=None, key="settings"), None, "key:settings"),  # FACEPORT_API_KEY
        (_principal("admin"), None, None),  # admins: every owner
        (_principal("admin"), BOB, BOB),
        (_principal(), BOB, "AUTH_FORBIDDEN"),
        (_principal(user_id=None, key="c" * 32), ALICE, "AUTH_FORBIDDEN"),
    ],
)
def test_owner_scope(principal: Principal, asked: str | None, scope: str | None) -> None:
    if scope == "AUTH_FORBIDDEN":
        with pytest.raises(FaceportError) as refused:
            owner_scope(principal, asked)
        assert refused.value.code == "AUTH_FORBIDDEN"
        return
    assert owner_scope(principal, asked) == scope
