"""Audit retention: keep the table cheap to prune at tens of millions of rows (docs/operations.md, "Audit retention").

The events are found by time through ``ix_audit_event_occurred_at`` (0001), which ``xhuma audit export`` and
``xhuma audit prune`` walk a page or a batch at a time; no new index is needed, and none is added: every index is
paid for by every audit write, which each disclosure waits for. What pruning needs from PostgreSQL is that the
space of a pruned month is reclaimed soon and reused by new events, and that the planner's statistics of the
time column keep up with a table that only grows at its recent end:

* autovacuum by a fixed number of changed rows instead of a fraction of the table: at the default 20 % a table of
  50 million rows is vacuumed only after 10 million deletions, so a monthly prune would leave its dead rows (and
  the table's growth) in place for months;
* analyze likewise, so that a range over the last hours is estimated from statistics that know those hours.

Storage parameters only (``ALTER TABLE ... SET``): no rewrite, and the lock it takes does not block reads or
writes. Nothing to do on SQLite.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_PARAMETERS = {
    "autovacuum_vacuum_scale_factor": "0",
    "autovacuum_vacuum_threshold": "50000",
    "autovacuum_analyze_scale_factor": "0",
    "autovacuum_analyze_threshold": "50000",
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        settings = ", ".join(f"{name} = {value}" for name, value in _PARAMETERS.items())
        op.execute(f"ALTER TABLE audit_event SET ({settings})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE audit_event RESET ({', '.join(_PARAMETERS)})")
