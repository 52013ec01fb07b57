"""Decisions carry the id of the request that made them, so a request sent twice is applied once.

A decision whose commit reached the database but whose answer was lost (the connection died, the
server restarted) is sent again by the store's retry or by the review page; the second send finds
its request id in the log and reports the first decision as saved instead of applying it again.

Revision ID: 0003_decision_request_id
Revises: 0002_session_epoch
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_decision_request_id"
down_revision = "0002_session_epoch"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN (no batch table copy): SQLite keeps the append-only triggers of the log
    op.add_column("decisions", sa.Column("request_id", sa.String(64), nullable=True))
    op.create_index("uq_decisions_request_id", "decisions", ["request_id"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_decisions_request_id", table_name="decisions")
    op.drop_column("decisions", "request_id")
