"""Initial queue store schema: review items, append-only decisions log, human labels, users.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
OPEN_ONLY = sa.text("status <> 'decided'")


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sku_id", sa.String(255), nullable=False),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
        sa.Column("priority", sa.Float, nullable=False, server_default="0"),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("title", sa.Text),
        sa.Column("description", sa.Text),
        sa.Column("brand", sa.Text),
        sa.Column("image_path", sa.Text),
        sa.Column("review_excerpt", sa.Text),
        sa.Column("current_category_path", sa.Text),
        sa.Column("suggested_category_id", sa.String(255)),
        sa.Column("suggested_category_path", sa.Text),
        sa.Column("confidence", sa.Float),
        sa.Column("candidates", JSON),
        sa.Column("taxonomy_version", sa.String(128)),
        sa.Column("model_version", sa.String(128)),
        sa.Column("run_id", sa.String(128)),
        sa.Column("content_hash", sa.String(128)),
        sa.Column("claimed_by", sa.String(150)),
        sa.Column("claimed_at", sa.DateTime),
        sa.Column("lease_expires_at", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("reviews_required", sa.Integer, nullable=False, server_default="1"),
        sa.Column("reviews_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("first_reviewer", sa.String(150)),
        sa.Column("decided_at", sa.DateTime),
        sa.Column("decided_by", sa.String(150)),
        sa.Column("final_kind", sa.String(16)),
        sa.Column("final_category_id", sa.String(255)),
        sa.Column("final_category_path", sa.Text),
        sa.CheckConstraint("status IN ('open', 'claimed', 'decided')", name="ck_review_items_status"),
        sa.CheckConstraint(
            "queue IN ('low_confidence', 'suspect', 'llm_failed', 'audit')", name="ck_review_items_queue"
        ),
    )
    # One open (open or claimed) item per SKU: the target of the nightly upsert (ON CONFLICT).
    op.create_index(
        "uq_review_items_open_sku",
        "review_items",
        ["sku_id"],
        unique=True,
        sqlite_where=OPEN_ONLY,
        postgresql_where=OPEN_ONLY,
    )
    op.create_index("ix_review_items_claim", "review_items", ["queue", "status", "priority"])
    op.create_index("ix_review_items_sku", "review_items", ["sku_id"])

    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("review_items.id", name="fk_decisions_item")),
        sa.Column("sku_id", sa.String(255), nullable=False),
        sa.Column("queue", sa.String(32)),
        sa.Column("reviewer", sa.String(150), nullable=False),
        sa.Column("decided_at", sa.DateTime, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("category_id", sa.String(255)),
        sa.Column("category_path", sa.Text),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("duration_ms", sa.Integer),
        sa.Column("review_round", sa.Integer, nullable=False, server_default="1"),
        sa.Column("final", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("source", sa.String(16), nullable=False, server_default="review"),
        sa.Column("title", sa.Text),
        sa.Column("shown_category_id", sa.String(255)),
        sa.Column("shown_category_path", sa.Text),
        sa.Column("shown_confidence", sa.Float),
        sa.Column("shown_candidates", JSON),
        sa.Column("current_category_path", sa.Text),
        sa.Column("model_version", sa.String(128)),
        sa.Column("taxonomy_version", sa.String(128)),
        sa.Column("run_id", sa.String(128)),
        sa.Column("content_hash", sa.String(128)),
        sa.CheckConstraint(
            "kind IN ('accept', 'choose', 'not_product', 'needs_data', 'skip')", name="ck_decisions_kind"
        ),
    )
    op.create_index("ix_decisions_item", "decisions", ["item_id"])
    op.create_index("ix_decisions_sku", "decisions", ["sku_id"])
    op.create_index("ix_decisions_reviewer", "decisions", ["reviewer", "decided_at"])

    op.create_table(
        "human_labels",
        sa.Column("sku_id", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("category_id", sa.String(255)),
        sa.Column("category_path", sa.Text),
        sa.Column("content_hash", sa.String(128)),
        sa.Column("decided_at", sa.DateTime, nullable=False),
        sa.Column("reviewer", sa.String(150), nullable=False),
        sa.Column("item_id", sa.Integer),
        sa.Column("decision_id", sa.Integer),
    )

    op.create_table(
        "review_users",
        sa.Column("username", sa.String(150), primary_key=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False, server_default="reviewer"),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.CheckConstraint("role IN ('reviewer', 'admin')", name="ck_review_users_role"),
    )

    # The audit log is append-only: refuse UPDATE and DELETE at the database level.
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            """
            CREATE FUNCTION shelfwise_decisions_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'decisions is an append-only audit log: % refused', TG_OP
                    USING HINT = 'record a new decision instead of changing or deleting one';
            END
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER decisions_append_only BEFORE UPDATE OR DELETE ON decisions "
            "FOR EACH ROW EXECUTE FUNCTION shelfwise_decisions_append_only()"
        )
        op.execute(
            "CREATE TRIGGER decisions_no_truncate BEFORE TRUNCATE ON decisions "
            "FOR EACH STATEMENT EXECUTE FUNCTION shelfwise_decisions_append_only()"
        )
    elif dialect == "sqlite":
        op.execute(
            "CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions BEGIN "
            "SELECT RAISE(ABORT, 'decisions is an append-only audit log: UPDATE refused'); END"
        )
        op.execute(
            "CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions BEGIN "
            "SELECT RAISE(ABORT, 'decisions is an append-only audit log: DELETE refused'); END"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS decisions_no_truncate ON decisions")
        op.execute("DROP TRIGGER IF EXISTS decisions_append_only ON decisions")
        op.execute("DROP FUNCTION IF EXISTS shelfwise_decisions_append_only()")
    elif dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS decisions_no_update")
        op.execute("DROP TRIGGER IF EXISTS decisions_no_delete")
    op.drop_table("review_users")
    op.drop_table("human_labels")
    op.drop_table("decisions")
    op.drop_table("review_items")
