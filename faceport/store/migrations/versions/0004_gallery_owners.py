"""Gallery owners and per-session token checks.

- ``subjects.owner`` (indexed): the principal a subject belongs to. Existing subjects go to
  the first admin (earliest ``created_at``); with no admin yet they stay ``NULL``, which only
  admins see. Names become unique per owner (``uq_subjects_owner_name``) instead of globally.
- ``refresh_tokens``: ``(family, revoked_at)`` index in place of ``family`` alone, so "has
  this session a live refresh token?" (checked on every access token) is one index probe.

Frozen DDL: it does not import the models.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FIRST_ADMIN = "(SELECT id FROM users WHERE role = 'admin' ORDER BY created_at, id LIMIT 1)"


def _rebuilding_subjects(upgrade: bool) -> None:
    """Change ``subjects``; SQLite copies the table, so its faces are kept aside meanwhile.

    SQLite's batch mode drops the old ``subjects`` table, and with foreign keys on that
    cascades to ``subject_faces`` (the pragma cannot be switched off inside the migration's
    transaction). The faces are copied to a temporary table first and put back after.
    """
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("CREATE TEMPORARY TABLE _subject_faces_0004 AS SELECT * FROM subject_faces")
    with op.batch_alter_table("subjects") as batch:
        if upgrade:
            batch.add_column(sa.Column("owner", sa.String(length=64), nullable=True))
            batch.drop_constraint(op.f("uq_subjects_name"), type_="unique")
            batch.create_unique_constraint(op.f("uq_subjects_owner_name"), ["owner", "name"])
            batch.create_index(op.f("ix_subjects_owner"), ["owner"], unique=False)
        else:
            batch.drop_index(op.f("ix_subjects_owner"))
            batch.drop_constraint(op.f("uq_subjects_owner_name"), type_="unique")
            batch.create_unique_constraint(op.f("uq_subjects_name"), ["name"])
            batch.drop_column("owner")
    if sqlite:
        op.execute("INSERT OR IGNORE INTO subject_faces SELECT * FROM _subject_faces_0004")
        op.execute("DROP TABLE _subject_faces_0004")


def upgrade() -> None:
    _rebuilding_subjects(upgrade=True)
    op.execute(f"UPDATE subjects SET owner = {_FIRST_ADMIN} WHERE owner IS NULL")
    op.drop_index(op.f("ix_refresh_tokens_family"), table_name="refresh_tokens")
    op.create_index("ix_refresh_tokens_family_revoked_at", "refresh_tokens", ["family", "revoked_at"], unique=False)


def downgrade() -> None:
    # Names unique per owner may collide once global again: the downgrade then fails on the constraint.
    op.drop_index("ix_refresh_tokens_family_revoked_at", table_name="refresh_tokens")
    op.create_index(op.f("ix_refresh_tokens_family"), "refresh_tokens", ["family"], unique=False)
    _rebuilding_subjects(upgrade=False)
