"""video jobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # The job engine on PostgreSQL (procrastinate, pinned to 3.10.x): its tables live next to ours.
        from procrastinate.schema import SchemaManager

        op.execute(SchemaManager.get_schema())

    op.create_table('video_jobs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('workspace_id', sa.String(length=40), nullable=False),
    sa.Column('key_id', sa.String(length=40), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('requested_model', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('candidates', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('provider', sa.String(length=100), nullable=True),
    sa.Column('provider_model_slug', sa.String(length=200), nullable=True),
    sa.Column('native_id', sa.String(length=500), nullable=True),
    sa.Column('attempts', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('output_access', sa.String(length=20), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=True),
    sa.Column('size', sa.String(length=40), nullable=True),
    sa.Column('audio', sa.Boolean(), nullable=False),
    sa.Column('sample_count', sa.Integer(), nullable=False),
    sa.Column('progress', sa.Integer(), nullable=False),
    sa.Column('progress_source', sa.String(length=20), nullable=False),
    sa.Column('provider_done', sa.Boolean(), nullable=False),
    sa.Column('provider_outputs', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('provider_usage', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('download_attempts', sa.Integer(), nullable=False),
    sa.Column('error_code', sa.String(length=100), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('next_run_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('poll_count', sa.Integer(), nullable=False),
    sa.Column('deadline_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(length=100), nullable=True),
    sa.Column('billing', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('webhook', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], name=op.f('fk_video_jobs_workspace_id_workspaces')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_video_jobs'))
    )
    with op.batch_alter_table('video_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_video_jobs_status_next_run', ['status', 'next_run_at'], unique=False)
        batch_op.create_index('ix_video_jobs_workspace_created', ['workspace_id', 'created_at', 'id'], unique=False)

    op.create_table('video_outputs',
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('variant', sa.String(length=20), nullable=False),
    sa.Column('storage_key', sa.String(length=500), nullable=False),
    sa.Column('mime_type', sa.String(length=100), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('duration_seconds', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['video_jobs.id'], name=op.f('fk_video_outputs_job_id_video_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'index', 'variant', name=op.f('pk_video_outputs'))
    )



def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers, "
                   "procrastinate_jobs, procrastinate_workers CASCADE")

    op.drop_table('video_outputs')
    with op.batch_alter_table('video_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_video_jobs_workspace_created')
        batch_op.drop_index('ix_video_jobs_status_next_run')

    op.drop_table('video_jobs')

