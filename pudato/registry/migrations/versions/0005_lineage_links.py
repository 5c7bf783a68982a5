"""lineage links: one row per dataset pair, for recursive lineage queries

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('lineage_links',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('source_namespace', sa.String(length=255), nullable=False),
    sa.Column('source_name', sa.String(length=1024), nullable=False),
    sa.Column('target_namespace', sa.String(length=255), nullable=False),
    sa.Column('target_name', sa.String(length=1024), nullable=False),
    sa.Column('step_id', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('logic_version', sa.String(length=64), nullable=True),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('runs', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('target_namespace', 'target_name', 'source_namespace', 'source_name',
                        name='uq_lineage_links_pair')
    )
    op.create_index('ix_lineage_links_source', 'lineage_links', ['source_namespace', 'source_name'], unique=False)
    # The links the recorded edges already imply; the latest edge of each pair names its step.
    op.execute("""
        INSERT INTO lineage_links (source_namespace, source_name, target_namespace, target_name,
                                   step_id, job_id, logic_version, first_seen_at, last_seen_at, runs)
        SELECT e.source_namespace, e.source_name, e.target_namespace, e.target_name,
               e.step_id, e.job_id, e.logic_version, s.finished_at, s.finished_at, counts.runs
        FROM lineage_edges e
        JOIN (SELECT max(id) AS id, count(*) AS runs FROM lineage_edges
              GROUP BY source_namespace, source_name, target_namespace, target_name) counts ON counts.id = e.id
        LEFT JOIN steps s ON s.id = e.step_id
    """)


def downgrade() -> None:
    op.drop_index('ix_lineage_links_source', table_name='lineage_links')
    op.drop_table('lineage_links')
