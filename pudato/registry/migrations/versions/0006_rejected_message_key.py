"""rejected messages recorded once: a key per message

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('rejected_messages') as batch:
        batch.add_column(sa.Column('message_key', sa.String(length=64), nullable=True))
        batch.create_unique_constraint('uq_rejected_messages_message_key', ['message_key'])


def downgrade() -> None:
    with op.batch_alter_table('rejected_messages') as batch:
        batch.drop_constraint('uq_rejected_messages_message_key', type_='unique')
        batch.drop_column('message_key')
