"""initial schema: event log and projections

Revision ID: 0001
Revises:
Create Date: 2026-11-22 02:11:34.865400
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "datasets",
        sa.Column("submission_id", sa.String(length=200), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("task", sa.String(length=200), nullable=False),
        sa.Column("route", sa.String(length=63), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=True),
        sa.Column(
            "manifest",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "splits",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "audit",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "findings",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("correlation_id", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("submission_id"),
    )
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_datasets_correlation_id"), ["correlation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_datasets_dataset_id"), ["dataset_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_datasets_tenant"), ["tenant"], unique=False)

    op.create_table(
        "dead_letters",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("dlq_stream_seq", sa.BigInteger(), nullable=True),
        sa.Column("original_subject", sa.String(length=300), nullable=False),
        sa.Column("service", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("ce_id", sa.String(length=200), nullable=True),
        sa.Column("correlation_id", sa.String(length=200), nullable=True),
        sa.Column(
            "headers",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dlq_stream_seq"),
    )
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dead_letters_correlation_id"), ["correlation_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_dead_letters_original_subject"), ["original_subject"], unique=False
        )

    op.create_table(
        "deployments",
        sa.Column("ce_id", sa.String(length=200), nullable=False),
        sa.Column("route", sa.String(length=63), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("rollout_id", sa.String(length=200), nullable=True),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("candidate_version", sa.String(length=40), nullable=False),
        sa.Column("stable_version", sa.String(length=40), nullable=True),
        sa.Column("phase", sa.String(length=20), nullable=True),
        sa.Column("traffic_percent", sa.Float(), nullable=True),
        sa.Column(
            "detail",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ce_id"),
    )
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deployments_route"), ["route"], unique=False)

    op.create_table(
        "eval_reports",
        sa.Column("ce_id", sa.String(length=200), nullable=False),
        sa.Column("version_id", sa.String(length=40), nullable=False),
        sa.Column(
            "suites",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "report",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ce_id"),
    )
    with op.batch_alter_table("eval_reports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_eval_reports_version_id"), ["version_id"], unique=False)

    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("ce_id", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("correlation_id", sa.String(length=200), nullable=False),
        sa.Column("causation_id", sa.String(length=200), nullable=True),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("traceparent", sa.String(length=100), nullable=True),
        sa.Column("stream_seq", sa.BigInteger(), nullable=True),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("outcome", sa.String(length=40), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ce_id"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_correlation_id"), ["correlation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_subject"), ["subject"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_tenant"), ["tenant"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_type"), ["type"], unique=False)

    op.create_table(
        "gate_decisions",
        sa.Column("ce_id", sa.String(length=200), nullable=False),
        sa.Column("version_id", sa.String(length=40), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column(
            "gates",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "policy",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "card",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ce_id"),
    )
    with op.batch_alter_table("gate_decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gate_decisions_version_id"), ["version_id"], unique=False)

    op.create_table(
        "model_versions",
        sa.Column("version_id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("route", sa.String(length=63), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("produced_by", sa.String(length=20), nullable=False),
        sa.Column("base_name", sa.String(length=200), nullable=False),
        sa.Column("base_sha256", sa.String(length=64), nullable=False),
        sa.Column("adapter_sha256", sa.String(length=64), nullable=True),
        sa.Column("weights_sha256", sa.String(length=64), nullable=True),
        sa.Column("method", sa.String(length=20), nullable=True),
        sa.Column("quantization", sa.String(length=20), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=True),
        sa.Column("run_id", sa.String(length=200), nullable=True),
        sa.Column(
            "model_ref",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "lineage",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("correlation_id", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version_id"),
    )
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_versions_base_sha256"), ["base_sha256"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_model_versions_correlation_id"), ["correlation_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_model_versions_route"), ["route"], unique=False)
        batch_op.create_index(batch_op.f("ix_model_versions_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_model_versions_tenant"), ["tenant"], unique=False)

    op.create_table(
        "training_runs",
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=True),
        sa.Column("method", sa.String(length=20), nullable=True),
        sa.Column("base_name", sa.String(length=200), nullable=True),
        sa.Column("base_sha256", sa.String(length=64), nullable=True),
        sa.Column("recipe_sha256", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("total_steps", sa.Integer(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("eval_loss", sa.Float(), nullable=True),
        sa.Column("tokens_per_second", sa.Float(), nullable=True),
        sa.Column("eta_seconds", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.String(length=40), nullable=True),
        sa.Column("correlation_id", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
    )
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_training_runs_correlation_id"), ["correlation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_training_runs_tenant"), ["tenant"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_training_runs_tenant"))
        batch_op.drop_index(batch_op.f("ix_training_runs_correlation_id"))

    op.drop_table("training_runs")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_versions_tenant"))
        batch_op.drop_index(batch_op.f("ix_model_versions_run_id"))
        batch_op.drop_index(batch_op.f("ix_model_versions_route"))
        batch_op.drop_index(batch_op.f("ix_model_versions_correlation_id"))
        batch_op.drop_index(batch_op.f("ix_model_versions_base_sha256"))

    op.drop_table("model_versions")
    with op.batch_alter_table("gate_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gate_decisions_version_id"))

    op.drop_table("gate_decisions")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_type"))
        batch_op.drop_index(batch_op.f("ix_events_tenant"))
        batch_op.drop_index(batch_op.f("ix_events_subject"))
        batch_op.drop_index(batch_op.f("ix_events_correlation_id"))

    op.drop_table("events")
    with op.batch_alter_table("eval_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_eval_reports_version_id"))

    op.drop_table("eval_reports")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deployments_route"))

    op.drop_table("deployments")
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dead_letters_original_subject"))
        batch_op.drop_index(batch_op.f("ix_dead_letters_correlation_id"))

    op.drop_table("dead_letters")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_datasets_tenant"))
        batch_op.drop_index(batch_op.f("ix_datasets_dataset_id"))
        batch_op.drop_index(batch_op.f("ix_datasets_correlation_id"))

    op.drop_table("datasets")
