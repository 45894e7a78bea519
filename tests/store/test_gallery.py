"""Gallery repository (subjects and their faces) against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, insert, inspect, text
from sqlalchemy.engine import make_url

from faceport.errors import InvalidInput, NotFound
from faceport.store import Store
from faceport.store.db import MIGRATIONS_DIR
from faceport.store.gallery import (
    FaceRecord,
    SubjectRecord,
    add_face,
    count_faces,
    count_subjects,
    count_subjects_by_owner,
    create_subject,
    delete_face,
    delete_subject,
    get_subject,
    get_subject_by_name,
    iter_all_embeddings,
    list_faces,
    list_subjects,
    rename_subject,
    subject_names,
)
from faceport.store.models import SubjectFace, utcnow

if TYPE_CHECKING:
    from tests.store.conftest import StoreTarget

SHA = "ab" * 32
OWNER = "0a" * 16  # a user id


def _unit(rng: np.random.Generator, dim: int = 128) -> np.ndarray:
    vector = rng.standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _subject(store: Store, name: str, owner: str | None = OWNER) -> SubjectRecord:
    with store.session() as session:
        return create_subject(session=session, name=name, owner=owner)


def _face(store: Store, subject_id: str, embedding: np.ndarray, **overrides: Any) -> FaceRecord:
    args: dict[str, Any] = {"model": "dlib_resnet", "bbox": [10.5, 20.0, 110.25, 140.0], "score": 0.93,
                            "image_sha256": SHA}
    args.update(overrides)
    with store.session() as session:
        return add_face(session=session, subject_id=subject_id, embedding=embedding, **args)


def _assert_recent_utc(moment: datetime) -> None:
    assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=5)


# --- subjects --------------------------------------------------------------------------


def test_create_trims_the_name_and_reads_back(store: Store) -> None:
    created = _subject(store, "  Grace Hopper \n")
    assert created.name == "Grace Hopper" and created.face_count == 0 and len(created.id) == 32
    _assert_recent_utc(created.created_at)
    with store.session() as session:
        assert get_subject(session=session, subject_id=created.id) == created
        assert get_subject_by_name(session=session, name=" Grace Hopper") == created


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("a", True),
        ("é" * 255, True),  # 255 characters, 510 bytes: the limit counts characters on both backends
        ("顔 🙂 Ünïcödé", True),
        ("", False),
        ("   \t ", False),
        ("x" * 256, False),
        ("nul\x00inside", False),
        ("bell\x07", False),
        (42, False),
        (None, False),
    ],
)
def test_name_validation(store: Store, name: Any, accepted: bool) -> None:
    if accepted:
        assert _subject(store, name).name == name
        return
    with pytest.raises(InvalidInput) as caught:
        _subject(store, name)
    assert caught.value.details["field"] == "name"
    with store.session() as session:
        assert count_subjects(session=session) == 0


def test_duplicate_names_are_refused_after_trimming_but_case_matters(store: Store) -> None:
    _subject(store, "Ada")
    with pytest.raises(InvalidInput, match="already exists") as caught:
        _subject(store, "  Ada ")
    assert caught.value.details == {"field": "name", "validation": "unique", "name": "Ada"}
    assert _subject(store, "ada").name == "ada"
    with store.session() as session:
        assert count_subjects(session=session) == 2


def test_racing_creates_of_one_name_leave_one_subject(store: Store) -> None:
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def create() -> None:
        barrier.wait()
        try:
            _subject(store, "Twin")
            outcomes.append("created")
        except InvalidInput as exc:
            assert exc.details["field"] == "name"
            outcomes.append("refused")

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created"] + ["refused"] * 5
    with store.session() as session:
        assert count_subjects(session=session) == 1


def test_list_subjects_pages_by_name_with_face_counts(store: Store) -> None:
    rng = np.random.default_rng(0)
    names = ["delta", "alpha", "echo", "charlie", "bravo", "golf", "foxtrot"]
    ids = {name: _subject(store, name).id for name in names}
    for _ in range(3):
        _face(store, ids["charlie"], _unit(rng))
    _face(store, ids["golf"], _unit(rng))
    seen: list[str] = []
    with store.session() as session:
        for page in (1, 2, 3):
            items, total = list_subjects(session=session, page=page, size=3)
            assert total == 7
            seen += [item.name for item in items]
            counts = {item.name: item.face_count for item in items}
            assert counts.get("charlie", 3) == 3 and counts.get("golf", 1) == 1
            assert all(count == 0 for name, count in counts.items() if name not in ("charlie", "golf"))
        assert list_subjects(session=session, page=4, size=3) == ([], 7)
    assert seen == sorted(names)


@pytest.mark.parametrize(("page", "size", "field"), [(0, 20, "page"), (1, 0, "size"), (1, 1001, "size")])
def test_list_subjects_refuses_bad_pages(store: Store, page: int, size: int, field: str) -> None:
    with store.session() as session, pytest.raises(InvalidInput) as caught:
        list_subjects(session=session, page=page, size=size)
    assert caught.value.details["field"] == field


def test_rename(store: Store) -> None:
    ada = _subject(store, "Ada")
    _subject(store, "Grace")
    with store.session() as session:
        renamed = rename_subject(session=session, subject_id=ada.id, name="  Ada Lovelace ")
    assert renamed.name == "Ada Lovelace" and renamed.created_at == ada.created_at
    assert renamed.updated_at > ada.updated_at
    with store.session() as session:
        assert rename_subject(session=session, subject_id=ada.id, name="Ada Lovelace").name == "Ada Lovelace"
    with store.session() as session, pytest.raises(InvalidInput, match="already exists"):
        rename_subject(session=session, subject_id=ada.id, name="Grace")
    with store.session() as session, pytest.raises(NotFound):
        rename_subject(session=session, subject_id="0" * 32, name="Nobody")
    with store.session() as session:
        assert get_subject(session=session, subject_id=ada.id).name == "Ada Lovelace"
        assert subject_names(session=session) == {ada.id: "Ada Lovelace", get_subject_by_name(
            session=session, name="Grace").id: "Grace"}


def test_delete_subject_deletes_its_faces_only(store: Store) -> None:
    rng = np.random.default_rng(1)
    gone, kept = _subject(store, "gone"), _subject(store, "kept")
    for _ in range(2):
        _face(store, gone.id, _unit(rng))
    kept_face = _face(store, kept.id, _unit(rng))
    with store.session() as session:
        deleted = delete_subject(session=session, subject_id=gone.id)
    assert (deleted.id, deleted.name, deleted.face_count) == (gone.id, "gone", 2)
    with store.session() as session:
        with pytest.raises(NotFound):
            get_subject(session=session, subject_id=gone.id)
        with pytest.raises(NotFound):
            list_faces(session=session, subject_id=gone.id)
        assert count_faces(session=session) == 1
        assert [f.id for f in list_faces(session=session, subject_id=kept.id)] == [kept_face.id]
    with store.session() as session, pytest.raises(NotFound):
        delete_subject(session=session, subject_id=gone.id)
    # The name is free again.
    assert _subject(store, "gone").face_count == 0


def test_unknown_subject_ids_are_not_found(store: Store) -> None:
    with store.session() as session:
        for call in (lambda: get_subject(session=session, subject_id="missing"),
                     lambda: list_faces(session=session, subject_id="missing"),
                     lambda: get_subject_by_name(session=session, name="missing")):
            with pytest.raises(NotFound):
                call()


# --- faces -----------------------------------------------------------------------------


def test_add_face_round_trips_the_embedding_bit_for_bit(store: Store) -> None:
    rng = np.random.default_rng(2)
    subject = _subject(store, "Grace")
    embedding = _unit(rng)
    first = _face(store, subject.id, embedding)
    second = _face(store, subject.id, _unit(rng), model="other_model", bbox=(1, 2, 3, 4), score=1)
    assert first.dim == 128 and first.model == "dlib_resnet" and first.image_sha256 == SHA
    assert first.bbox == (10.5, 20.0, 110.25, 140.0) and first.score == pytest.approx(0.93)
    _assert_recent_utc(first.created_at)
    with store.session() as session:
        faces = list_faces(session=session, subject_id=subject.id)
        assert get_subject(session=session, subject_id=subject.id).face_count == 2
    assert [f.id for f in faces] == [first.id, second.id]
    assert faces[0].embedding.dtype == np.float32
    np.testing.assert_array_equal(faces[0].embedding, embedding)
    assert faces[1].model == "other_model" and faces[1].bbox == (1.0, 2.0, 3.0, 4.0)
    with pytest.raises(ValueError):
        faces[0].embedding[0] = 1.0  # records are read-only


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"embedding": np.zeros((2, 64), np.float32)}, "embedding"),
        ({"embedding": np.zeros(0, np.float32)}, "embedding"),
        ({"embedding": np.array([0.1, np.nan], np.float32)}, "embedding"),
        ({"embedding": ["a", "b"]}, "embedding"),
        ({"bbox": [1, 2, 3]}, "bbox"),
        ({"bbox": [1, 2, 3, float("inf")]}, "bbox"),
        ({"score": float("nan")}, "score"),
        ({"score": True}, "score"),
        ({"model": ""}, "model"),
        ({"model": "m" * 65}, "model"),
        ({"image_sha256": "xyz"}, "image_sha256"),
        ({"image_sha256": "AB" * 32}, "image_sha256"),
    ],
)
def test_add_face_refuses_malformed_values(store: Store, overrides: dict[str, Any], field: str) -> None:
    subject = _subject(store, "Grace")
    overrides = dict(overrides)  # the parameter is shared by both backends' runs
    embedding = overrides.pop("embedding", np.ones(128, np.float32))
    with pytest.raises(InvalidInput) as caught:
        _face(store, subject.id, embedding, **overrides)
    assert caught.value.details["field"] == field
    with store.session() as session:
        assert count_faces(session=session) == 0


def test_add_face_to_an_unknown_subject_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        _face(store, "f" * 32, np.ones(128, np.float32))


def test_delete_face_only_through_its_own_subject(store: Store) -> None:
    rng = np.random.default_rng(3)
    ada, grace = _subject(store, "Ada"), _subject(store, "Grace")
    face = _face(store, ada.id, _unit(rng))
    with store.session() as session, pytest.raises(NotFound) as caught:
        delete_face(session=session, subject_id=grace.id, face_id=face.id)
    assert caught.value.details == {"subject_id": grace.id, "face_id": face.id}
    with store.session() as session:
        deleted = delete_face(session=session, subject_id=ada.id, face_id=face.id)
    assert deleted.id == face.id
    np.testing.assert_array_equal(deleted.embedding, face.embedding)
    with store.session() as session:
        assert list_faces(session=session, subject_id=ada.id) == []
        with pytest.raises(NotFound):
            delete_face(session=session, subject_id=ada.id, face_id=face.id)


# --- streaming the index ---------------------------------------------------------------


def _bulk_faces(store: Store, n_subjects: int, per_subject: int, rng: np.random.Generator,
                *, dim: int = 128, model: str = "dlib_resnet") -> dict[str, tuple[str, np.ndarray]]:
    """Insert subjects and faces in bulk; returns face id -> (subject id, embedding)."""
    from faceport.store.models import Subject

    now = utcnow()
    expected: dict[str, tuple[str, np.ndarray]] = {}
    subjects, faces = [], []
    for _ in range(n_subjects):
        subject_id = uuid.uuid4().hex
        subjects.append({"id": subject_id, "name": f"s-{subject_id}", "created_at": now, "updated_at": now})
        for _ in range(per_subject):
            face_id, vector = uuid.uuid4().hex, rng.standard_normal(dim).astype(np.float32)
            expected[face_id] = (subject_id, vector)
            faces.append({"id": face_id, "subject_id": subject_id, "embedding": vector.astype("<f4").tobytes(),
                          "dim": dim, "model": model, "bbox": [0, 0, 1, 1], "score": 0.5,
                          "image_sha256": SHA, "created_at": now})
    with store.session() as session:
        session.execute(insert(Subject), subjects)
        session.execute(insert(SubjectFace), faces)
    return expected


def test_iter_all_embeddings_streams_every_face_in_chunks(store: Store) -> None:
    rng = np.random.default_rng(4)
    expected = _bulk_faces(store, 1250, 2, rng)
    others = _bulk_faces(store, 3, 1, rng, dim=512)
    other_model = _bulk_faces(store, 2, 1, rng, model="arcface")
    with store.session() as session:
        chunks = list(iter_all_embeddings(session=session, dim=128, model="dlib_resnet", chunk_size=1000))
        every_model = sum(len(c) for c in iter_all_embeddings(session=session, dim=128))
        wide = list(iter_all_embeddings(session=session, dim=512))
    assert [len(chunk) for chunk in chunks] == [1000, 1000, 500]
    got = {}
    for chunk in chunks:
        assert chunk.embeddings.shape == (len(chunk), 128) and chunk.embeddings.dtype == np.float32
        for i, face_id in enumerate(chunk.face_ids):
            got[face_id] = (chunk.subject_ids[i], chunk.embeddings[i])
    assert got.keys() == expected.keys()
    for face_id, (subject_id, vector) in expected.items():
        assert got[face_id][0] == subject_id
        np.testing.assert_array_equal(got[face_id][1], vector)
    assert every_model == len(expected) + len(other_model)
    assert sorted(f for c in wide for f in c.face_ids) == sorted(others)


def test_iter_all_embeddings_skips_corrupt_rows(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(5)
    subject = _subject(store, "Grace")
    good = _face(store, subject.id, _unit(rng))
    with store.session() as session:
        session.execute(insert(SubjectFace), [{
            "id": uuid.uuid4().hex, "subject_id": subject.id, "embedding": b"\x00" * 100, "dim": 128,
            "model": "dlib_resnet", "bbox": [0, 0, 1, 1], "score": 0.5, "image_sha256": SHA, "created_at": utcnow()}])
        chunks = list(iter_all_embeddings(session=session, dim=128))
    assert [f for c in chunks for f in c.face_ids] == [good.id]
    assert "skipping 1 stored face" in caplog.text


def test_iter_all_embeddings_refuses_bad_arguments(store: Store) -> None:
    with store.session() as session:
        with pytest.raises(InvalidInput):
            list(iter_all_embeddings(session=session, dim=0))
        with pytest.raises(InvalidInput):
            list(iter_all_embeddings(session=session, dim=128, chunk_size=0))
        assert list(iter_all_embeddings(session=session, dim=128)) == []


# --- owners ----------------------------------------------------------------------------

OTHER = "0b" * 16


def test_names_are_unique_per_owner_not_globally(store: Store) -> None:
    mine, theirs = _subject(store, "alice"), _subject(store, "alice", OTHER)
    assert mine.id != theirs.id and (mine.owner, theirs.owner) == (OWNER, OTHER)
    with pytest.raises(InvalidInput, match="already exists"):
        _subject(store, " alice ", OTHER)
    bob = _subject(store, "bob", OTHER)
    with store.session() as session:
        with pytest.raises(InvalidInput, match="already exists"):
            rename_subject(session=session, subject_id=bob.id, name="alice")  # taken within its owner
    with store.session() as session:
        assert rename_subject(session=session, subject_id=mine.id, name="bob").name == "bob"  # free within mine
        assert get_subject_by_name(session=session, name="alice", owner=OTHER).id == theirs.id
        assert get_subject_by_name(session=session, name="bob", owner=OWNER).id == mine.id
        assert count_subjects(session=session, owner=OTHER) == 2
        assert count_subjects_by_owner(session=session) == {OWNER: 1, OTHER: 2}


def test_someone_elses_subject_reads_exactly_like_a_missing_one(store: Store) -> None:
    rng = np.random.default_rng(7)
    theirs = _subject(store, "theirs", OTHER)
    face = _face(store, theirs.id, _unit(rng))
    _subject(store, "mine")

    def attempts(session: Any, subject_id: str) -> list[Any]:
        return [lambda: get_subject(session=session, subject_id=subject_id, owner=OWNER),
                lambda: rename_subject(session=session, subject_id=subject_id, name="stolen", owner=OWNER),
                lambda: delete_subject(session=session, subject_id=subject_id, owner=OWNER),
                lambda: list_faces(session=session, subject_id=subject_id, owner=OWNER),
                lambda: delete_face(session=session, subject_id=subject_id, face_id=face.id, owner=OWNER),
                lambda: add_face(session=session, subject_id=subject_id, embedding=_unit(rng), model="dlib_resnet",
                                 bbox=[0, 0, 1, 1], score=0.9, image_sha256=SHA, owner=OWNER)]

    missing = "f" * 32
    with store.session() as session:
        for other_owner, absent in zip(attempts(session, theirs.id), attempts(session, missing), strict=True):
            with pytest.raises(NotFound) as refused:
                other_owner()
            with pytest.raises(NotFound) as not_there:
                absent()
            assert refused.value.code == not_there.value.code == "NOT_FOUND"
            assert refused.value.message.replace(theirs.id, missing) == not_there.value.message
        with pytest.raises(NotFound):
            get_subject_by_name(session=session, name="theirs", owner=OWNER)
        mine_only, total = list_subjects(session=session, owner=OWNER)
        assert [s.name for s in mine_only] == ["mine"] and total == 1
        every, total = list_subjects(session=session)  # owner=None: admins see every owner's
        assert [s.name for s in every] == ["mine", "theirs"] and total == 2
    with store.session() as session:  # untouched by the refused attempts, and reachable by its owner
        assert get_subject(session=session, subject_id=theirs.id, owner=OTHER) == theirs.__class__(
            theirs.id, "theirs", 1, theirs.created_at, theirs.updated_at, OTHER)
        assert [f.id for f in list_faces(session=session, subject_id=theirs.id, owner=OTHER)] == [face.id]
        chunk, = iter_all_embeddings(session=session, dim=128)
        assert chunk.owners == [OTHER] and chunk.subject_ids == [theirs.id]


def _migrated_to_0003(store_target: StoreTarget) -> Engine:
    """A database of this target migrated only to 0003, the schema before owners."""
    url = make_url(store_target.url)
    if url.get_backend_name() == "sqlite":
        Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args=store_target.connect_args)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
    return engine


@pytest.mark.parametrize("with_admin", [True, False])
def test_migration_0004_gives_existing_subjects_to_the_first_admin(store_target: StoreTarget,
                                                                  with_admin: bool) -> None:
    engine = _migrated_to_0003(store_target)
    now = utcnow()
    users = [("u-user", "user", now - timedelta(days=3)), ("u-late-admin", "admin", now - timedelta(days=1)),
             ("u-first-admin", "admin", now - timedelta(days=2))]
    rng = np.random.default_rng(8)
    vectors = [_unit(rng) for _ in range(3)]
    try:
        with engine.begin() as connection:
            for user_id, role, created in users:
                if role == "admin" and not with_admin:
                    continue
                connection.execute(text(
                    "INSERT INTO users (id, username, email, password_hash, role, is_active, created_at, updated_at)"
                    " VALUES (:id, :id, :email, 'x', :role, :active, :created, :created)"),
                    {"id": user_id, "email": f"{user_id}@example.com", "role": role, "active": True,
                     "created": created})
            for i, name in enumerate(["alice", "bob"]):
                connection.execute(text("INSERT INTO subjects (id, name, created_at, updated_at) "
                                        "VALUES (:id, :name, :now, :now)"), {"id": f"s{i}", "name": name, "now": now})
            for i, vector in enumerate(vectors):
                connection.execute(text(
                    "INSERT INTO subject_faces (id, subject_id, embedding, dim, model, bbox, score, image_sha256,"
                    " created_at) VALUES (:id, :subject, :embedding, 128, 'dlib_resnet', '[0, 0, 1, 1]', 0.9, :sha,"
                    " :now)"), {"id": f"f{i}", "subject": f"s{min(i, 1)}", "embedding": vector.astype("<f4").tobytes(),
                               "sha": SHA, "now": now})
    finally:
        engine.dispose()

    store = store_target.open()  # migrates 0003 -> head
    try:
        expected_owner = "u-first-admin" if with_admin else None
        with store.session() as session:
            subjects, total = list_subjects(session=session)
            assert total == 2 and {s.owner for s in subjects} == {expected_owner}
            assert count_subjects_by_owner(session=session) == {expected_owner: 2}
            faces = {f.id: f for s in subjects for f in list_faces(session=session, subject_id=s.id)}
            assert sorted(faces) == ["f0", "f1", "f2"]  # SQLite rebuilds the table: the faces must survive
            for i, vector in enumerate(vectors):
                np.testing.assert_array_equal(faces[f"f{i}"].embedding, vector)
            if with_admin:
                assert [s.name for s in list_subjects(session=session, owner="u-first-admin")[0]] == ["alice", "bob"]
                assert list_subjects(session=session, owner="u-user")[1] == 0
        # Names are unique per owner from now on.
        assert _subject(store, "alice", "u-user").owner == "u-user"
        indexes = {index["name"] for index in inspect(store.engine).get_indexes("subjects",
                                                                                 schema=store_target.schema)}
        assert "ix_subjects_owner" in indexes
    finally:
        store.dispose()
