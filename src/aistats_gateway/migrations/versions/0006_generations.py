"""generations, token counters and the per-key tokens-per-minute limit

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table(
        'generations',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('workspace_id', sa.String(length=40), nullable=False),
        sa.Column('key_id', sa.String(length=40), nullable=False),
        sa.Column('endpoint', sa.String(length=40), nullable=False),
        sa.Column('model', sa.String(length=200), nullable=False),
        sa.Column('provider', sa.String(length=80), nullable=True),
        sa.Column('native_id', sa.String(length=200), nullable=True),
        sa.Column('stream', sa.Boolean(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('error_code', sa.String(length=80), nullable=True),
        sa.Column('error_message', sa.Text(), nullable=True),
        sa.Column('attempts', _JSON, nullable=False),
        sa.Column('usage', _JSON, nullable=False),
        sa.Column('finish_reason', sa.String(length=20), nullable=True),
        sa.Column('hold_nanos', sa.BigInteger(), nullable=False),
        sa.Column('cost_nanos', sa.BigInteger(), nullable=False),
        sa.Column('latency_ms', sa.Integer(), nullable=True),
        sa.Column('ttft_ms', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_generations')),
    )
    op.create_index('ix_generations_workspace_created', 'generations', ['workspace_id', 'created_at'])
    op.create_table(
        'token_counters',
        sa.Column('key_id', sa.String(length=40), nullable=False),
        sa.Column('window', sa.BigInteger(), nullable=False),
        sa.Column('tokens', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('key_id', 'window', name=op.f('pk_token_counters')),
    )
    with op.batch_alter_table('api_keys') as batch:
        batch.add_column(sa.Column('tpm_limit', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_column('tpm_limit')
    op.drop_table('token_counters')
    op.drop_index('ix_generations_workspace_created', table_name='generations')
    op.drop_table('generations')
