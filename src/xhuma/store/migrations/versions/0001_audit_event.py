"""Create the audit_event table.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("transaction", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64)),
        sa.Column("reason", sa.String(256)),
        sa.Column("patient_pseudonym", sa.String(64)),
        sa.Column("user_id", sa.String(256)),
        sa.Column("user_name", sa.String(256)),
        sa.Column("user_role", sa.String(128)),
        sa.Column("organization", sa.String(256)),
        sa.Column("organization_id", sa.String(256)),
        sa.Column("home_community_id", sa.String(256)),
        sa.Column("purpose_of_use", sa.String(64)),
        sa.Column("saml_verified", sa.Boolean()),
        sa.Column("client_cert_subject", sa.String(512)),
        sa.Column("client_address", sa.String(64)),
        sa.Column("message_id", sa.String(256)),
        sa.Column("request_id", sa.String(64)),
        sa.Column("trace_id", sa.String(64)),
        sa.Column("spine_trace_id", sa.String(64)),
        sa.Column("ssp_from", sa.String(32)),
        sa.Column("ssp_to", sa.String(32)),
        sa.Column("ssp_interaction_id", sa.String(128)),
        sa.Column("jwt_summary", sa.JSON()),
        sa.Column("document_unique_id", sa.String(128)),
        sa.Column("duration_ms", sa.Float()),
        sa.Column("details", sa.JSON()),
    )
    for column in ("occurred_at", "transaction", "outcome", "patient_pseudonym", "document_unique_id"):
        op.create_index(f"ix_audit_event_{column}", "audit_event", [column])


def downgrade() -> None:
    op.drop_table("audit_event")
