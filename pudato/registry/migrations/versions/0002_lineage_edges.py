"""lineage edges

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('lineage_edges',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('step_id', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('source_namespace', sa.String(length=255), nullable=False),
    sa.Column('source_name', sa.String(length=1024), nullable=False),
    sa.Column('target_namespace', sa.String(length=255), nullable=False),
    sa.Column('target_name', sa.String(length=1024), nullable=False),
    sa.Column('logic_version', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['step_id'], ['steps.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_lineage_edges_source', 'lineage_edges', ['source_namespace', 'source_name'], unique=False)
    op.create_index(op.f('ix_lineage_edges_step_id'), 'lineage_edges', ['step_id'], unique=False)
    op.create_index('ix_lineage_edges_target', 'lineage_edges', ['target_namespace', 'target_name'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_lineage_edges_target', table_name='lineage_edges')
    op.drop_index(op.f('ix_lineage_edges_step_id'), table_name='lineage_edges')
    op.drop_index('ix_lineage_edges_source', table_name='lineage_edges')
    op.drop_table('lineage_edges')
