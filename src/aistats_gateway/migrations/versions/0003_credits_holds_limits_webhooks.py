"""credits holds limits webhooks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('rate_counters',
    sa.Column('key_id', sa.String(length=40), nullable=False),
    sa.Column('window', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('key_id', 'window', name=op.f('pk_rate_counters'))
    )
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('workspace_id', sa.String(length=40), nullable=False),
    sa.Column('event_type', sa.String(length=40), nullable=False),
    sa.Column('event_key', sa.String(length=60), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('secret', sa.String(length=500), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('history', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
    sa.UniqueConstraint('job_id', 'event_key', name='uq_webhook_deliveries_job_event')
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_deliveries_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_webhook_deliveries_job_id'), ['job_id'], unique=False)

    op.create_table('holds',
    sa.Column('id', sa.String(length=80), nullable=False),
    sa.Column('workspace_id', sa.String(length=40), nullable=False),
    sa.Column('key_id', sa.String(length=40), nullable=False),
    sa.Column('ref', sa.String(length=100), nullable=False),
    sa.Column('amount_nanos', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('settled_nanos', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finalized_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_holds_workspace_id_workspaces')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_holds'))
    )
    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.create_index('ix_holds_key_created', ['key_id', 'created_at'], unique=False)
        batch_op.create_index('ix_holds_state', ['state'], unique=False)

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rpm_limit', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('daily_spend_limit_nanos', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('monthly_spend_limit_nanos', sa.BigInteger(), nullable=True))

    with op.batch_alter_table('workspaces', schema=None) as batch_op:
        batch_op.add_column(sa.Column('balance_nanos', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('held_nanos', sa.BigInteger(), server_default='0', nullable=False))
    # Credits granted before this migration become the starting balances.
    op.execute("UPDATE workspaces SET balance_nanos = (SELECT COALESCE(SUM(amount_nanos), 0) FROM ledger_entries "
               "WHERE ledger_entries.workspace_id = workspaces.id AND kind IN ('credit', 'adjustment'))")




def downgrade() -> None:

    with op.batch_alter_table('workspaces', schema=None) as batch_op:
        batch_op.drop_column('held_nanos')
        batch_op.drop_column('balance_nanos')

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('monthly_spend_limit_nanos')
        batch_op.drop_column('daily_spend_limit_nanos')
        batch_op.drop_column('rpm_limit')

    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.drop_index('ix_holds_state')
        batch_op.drop_index('ix_holds_key_created')

    op.drop_table('holds')
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_deliveries_job_id'))
        batch_op.drop_index('ix_webhook_deliveries_due')

    op.drop_table('webhook_deliveries')
    op.drop_table('rate_counters')

