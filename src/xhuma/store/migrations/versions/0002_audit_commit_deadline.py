"""Exact audit trail: an identity per event, a commit deadline, and voiding events.

- ``event_id``: a UUID the gateway gives each event, so that another event can refer to it;
- ``commit_by``: the time after which the event may no longer commit (PostgreSQL: a deferred constraint trigger
  checks it at COMMIT; SQLite: the writer process checks it before COMMIT). The gateway answers its caller by then,
  so an event that commits late can never claim a disclosure the caller was told did not happen;
- ``voids``: on an event with outcome ``not-disclosed``, the ``event_id`` of a disclosure event whose write timed
  out; the caller was told nothing was disclosed (docs/decisions.md, "The audit trail is exact").

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COMMIT_BY_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_event_commit_by() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Runs at COMMIT (deferred): clock_timestamp() is the time of the commit itself, not of the statement.
    IF NEW.commit_by IS NOT NULL AND clock_timestamp() > NEW.commit_by THEN
        RAISE EXCEPTION 'audit event past its commit deadline' USING ERRCODE = '57014';
    END IF;
    RETURN NULL;
END
$$
"""

_COMMIT_BY_TRIGGER = """
CREATE CONSTRAINT TRIGGER audit_event_commit_by AFTER INSERT ON audit_event
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_event_commit_by()
"""


def upgrade() -> None:
    with op.batch_alter_table("audit_event") as batch:
        batch.add_column(sa.Column("event_id", sa.String(36)))
        batch.add_column(sa.Column("commit_by", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("voids", sa.String(36)))
    # Few rows void another: a partial index finds them without weighing on every insert.
    op.create_index("ix_audit_event_voids", "audit_event", ["voids"],
                    postgresql_where=sa.text("voids IS NOT NULL"), sqlite_where=sa.text("voids IS NOT NULL"))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_COMMIT_BY_FUNCTION)
        op.execute(_COMMIT_BY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_event_commit_by ON audit_event")
        op.execute("DROP FUNCTION IF EXISTS audit_event_commit_by()")
    op.drop_index("ix_audit_event_voids", table_name="audit_event")
    with op.batch_alter_table("audit_event") as batch:
        batch.drop_column("voids")
        batch.drop_column("commit_by")
        batch.drop_column("event_id")
