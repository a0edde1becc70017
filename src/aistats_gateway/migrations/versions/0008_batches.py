"""batches

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

The Batches API's tables (``batches/tables.py``): ``batches`` and one ``batch_rows`` row per request.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def _ts(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table('batches',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('workspace_id', sa.String(length=40), nullable=False),
    sa.Column('key_id', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('mode', sa.String(length=10), nullable=False),
    sa.Column('endpoint', sa.String(length=40), nullable=False),
    sa.Column('completion_window', sa.String(length=10), nullable=False),
    sa.Column('input_file_id', sa.String(length=64), nullable=True),
    sa.Column('output_file_id', sa.String(length=64), nullable=True),
    sa.Column('error_file_id', sa.String(length=64), nullable=True),
    sa.Column('model', sa.String(length=200), nullable=True),
    sa.Column('provider', sa.String(length=100), nullable=True),
    sa.Column('routing', _JSON, nullable=True),
    sa.Column('native_id', sa.String(length=200), nullable=True),
    sa.Column('native_state', sa.String(length=20), nullable=True),
    _ts('native_since'),
    sa.Column('meta', _JSON, nullable=True),
    sa.Column('webhook', _JSON, nullable=True),
    sa.Column('errors', _JSON, nullable=True),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('completed', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('progress_bucket', sa.Integer(), nullable=False),
    sa.Column('hold_nanos', sa.BigInteger(), nullable=False),
    sa.Column('cost_nanos', sa.BigInteger(), nullable=False),
    sa.Column('usage', _JSON, nullable=True),
    sa.Column('billing', _JSON, nullable=True),
    _ts('created_at', False), _ts('updated_at', False), _ts('expires_at', False),
    _ts('in_progress_at'), _ts('finalizing_at'), _ts('completed_at'), _ts('failed_at'), _ts('expired_at'),
    _ts('cancelling_at'), _ts('cancelled_at'), _ts('next_run_at', False), _ts('lease_until'),
    sa.Column('lease_owner', sa.String(length=100), nullable=True),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_batches_workspace_id_workspaces')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batches'))
    )
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index('ix_batches_workspace_created', ['workspace_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_batches_status_next_run', ['status', 'next_run_at'], unique=False)
    op.create_table('batch_rows',
    sa.Column('id', sa.String(length=80), nullable=False),
    sa.Column('batch_id', sa.String(length=64), nullable=False),
    sa.Column('workspace_id', sa.String(length=40), nullable=False),
    sa.Column('line', sa.Integer(), nullable=False),
    sa.Column('custom_id', sa.String(length=600), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('provider', sa.String(length=100), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('usage', _JSON, nullable=True),
    sa.Column('cost_nanos', sa.BigInteger(), nullable=False),
    sa.Column('request_id', sa.String(length=80), nullable=True),
    sa.Column('response', sa.LargeBinary(), nullable=True),
    sa.Column('error', _JSON, nullable=True),
    _ts('created_at', False), _ts('updated_at', False), _ts('completed_at'), _ts('next_run_at', False),
    _ts('lease_until'),
    sa.Column('lease_owner', sa.String(length=100), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_batch_rows_batch_id_batches'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batch_rows'))
    )
    with op.batch_alter_table('batch_rows', schema=None) as batch_op:
        batch_op.create_index('ix_batch_rows_batch_line', ['batch_id', 'line'], unique=True)
        batch_op.create_index('ix_batch_rows_status_next_run', ['status', 'next_run_at'], unique=False)
        batch_op.create_index('ix_batch_rows_batch_status', ['batch_id', 'status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('batch_rows', schema=None) as batch_op:
        batch_op.drop_index('ix_batch_rows_batch_status')
        batch_op.drop_index('ix_batch_rows_status_next_run')
        batch_op.drop_index('ix_batch_rows_batch_line')
    op.drop_table('batch_rows')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index('ix_batches_status_next_run')
        batch_op.drop_index('ix_batches_workspace_created')
    op.drop_table('batches')
