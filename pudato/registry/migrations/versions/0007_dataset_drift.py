"""dataset drift: one row per load of a release, with its drift and validation reports

Revision ID: 0007
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dataset_drift',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('step_id', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=True),
    sa.Column('namespace', sa.String(length=255), nullable=False),
    sa.Column('name', sa.String(length=1024), nullable=False),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('drifted', sa.Boolean(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=False),
    sa.Column('validation', sa.JSON(), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['step_id'], ['steps.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_dataset_drift_dataset', 'dataset_drift', ['namespace', 'name'], unique=False)
    op.create_index(op.f('ix_dataset_drift_step_id'), 'dataset_drift', ['step_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_dataset_drift_step_id'), table_name='dataset_drift')
    op.drop_index('ix_dataset_drift_dataset', table_name='dataset_drift')
    op.drop_table('dataset_drift')
