"""files

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

The Files API's table (``files/tables.py``). ``down_revision`` is the head this branch was built
on; the migrations 0004–0006 of the other branches are re-chained in front of it at merge.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table('files',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('workspace_id', sa.String(length=40), nullable=False),
    sa.Column('key_id', sa.String(length=40), nullable=True),
    sa.Column('filename', sa.String(length=512), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('status_details', sa.Text(), nullable=True),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('storage_key', sa.String(length=500), nullable=False),
    sa.Column('batch_lines', sa.Integer(), nullable=True),
    sa.Column('batch_endpoint', sa.String(length=40), nullable=True),
    sa.Column('batch_models', _JSON, nullable=True),
    sa.Column('meta', _JSON, nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_files_workspace_id_workspaces')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_files'))
    )
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.create_index('ix_files_workspace_created', ['workspace_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_files_status_expires', ['status', 'expires_at'], unique=False)
        batch_op.create_index('ix_files_status_updated', ['status', 'updated_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index('ix_files_status_updated')
        batch_op.drop_index('ix_files_status_expires')
        batch_op.drop_index('ix_files_workspace_created')
    op.drop_table('files')
