"""subjects and hold refs: holds name their operation by kind + id and record a shortfall; the webhook
outbox is keyed by subject (kind + id) instead of a video job id. Existing rows are videos.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ref_kind', sa.String(length=20), server_default='video', nullable=False))
        batch_op.add_column(sa.Column('shortfall_nanos', sa.BigInteger(), server_default='0', nullable=False))
    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.alter_column('ref_kind', server_default=None)
        batch_op.create_index('ix_holds_ref', ['ref_kind', 'ref'], unique=False)

    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_constraint('uq_webhook_deliveries_job_event', type_='unique')
        batch_op.drop_index('ix_webhook_deliveries_job_id')
        batch_op.alter_column('job_id', new_column_name='subject_id', existing_type=sa.String(length=64),
                              existing_nullable=False)
        batch_op.add_column(sa.Column('subject_kind', sa.String(length=20), server_default='video', nullable=False))
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.alter_column('subject_kind', server_default=None)
        batch_op.create_unique_constraint('uq_webhook_deliveries_subject_event',
                                          ['subject_kind', 'subject_id', 'event_key'])
        batch_op.create_index('ix_webhook_deliveries_subject', ['subject_kind', 'subject_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_deliveries_subject')
        batch_op.drop_constraint('uq_webhook_deliveries_subject_event', type_='unique')
        batch_op.drop_column('subject_kind')
        batch_op.alter_column('subject_id', new_column_name='job_id', existing_type=sa.String(length=64),
                              existing_nullable=False)
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_webhook_deliveries_job_event', ['job_id', 'event_key'])
        batch_op.create_index('ix_webhook_deliveries_job_id', ['job_id'], unique=False)

    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.drop_index('ix_holds_ref')
        batch_op.drop_column('shortfall_nanos')
        batch_op.drop_column('ref_kind')
