"""Proctoring (seed C): clients, their reference face embeddings, evidence frames.

Frozen DDL: it does not import the models.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "proctor_clients",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("violations", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('active', 'paused', 'blocked')", name=op.f("ck_proctor_clients_state_valid")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proctor_clients")),
        sa.UniqueConstraint("user_name", name=op.f("uq_proctor_clients_user_name")),
    )
    op.create_table(
        "proctor_faces",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=32), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["proctor_clients.id"],
                                name=op.f("fk_proctor_faces_client_id_proctor_clients"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proctor_faces")),
    )
    op.create_index(op.f("ix_proctor_faces_client_id"), "proctor_faces", ["client_id"], unique=False)
    op.create_table(
        "proctor_evidence",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("actual_username", sa.String(length=255), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("image", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proctor_evidence")),
    )
    op.create_index(op.f("ix_proctor_evidence_user_name"), "proctor_evidence", ["user_name"], unique=False)
    op.create_index(op.f("ix_proctor_evidence_created_at"), "proctor_evidence", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_proctor_evidence_created_at"), table_name="proctor_evidence")
    op.drop_index(op.f("ix_proctor_evidence_user_name"), table_name="proctor_evidence")
    op.drop_table("proctor_evidence")
    op.drop_index(op.f("ix_proctor_faces_client_id"), table_name="proctor_faces")
    op.drop_table("proctor_faces")
    op.drop_table("proctor_clients")
