"""bounded fates: retry times and claims on photos, heartbeats on training runs, the singletons in the schema

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 02:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_OPEN_RUN = "state IN ('pending', 'running')"


def upgrade() -> None:
    with op.batch_alter_table('images') as batch:
        batch.add_column(sa.Column('next_attempt_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('lease_until', sa.DateTime(), nullable=True))
    op.execute("UPDATE images SET next_attempt_at = updated_at")
    op.execute("UPDATE images SET lease_until = updated_at WHERE state = 'running'")  # claims made before leases
    op.create_index('ix_images_stage_state_next', 'images', ['stage', 'state', 'next_attempt_at'])

    with op.batch_alter_table('training_runs') as batch:
        batch.add_column(sa.Column('heartbeat_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('requeues', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('data_key', sa.String(length=80), nullable=True))

    # Data that broke the rules before the schema enforced them: the newest active version stays
    # active, the newest open run stays open; the others are retired or failed with a reason.
    op.execute("UPDATE model_versions SET status = 'retired' WHERE status = 'active' AND id < "
               "(SELECT max(id) FROM model_versions WHERE status = 'active')")
    op.execute(f"UPDATE training_runs SET state = 'failed', error = 'superseded: only one open run is allowed' "
               f"WHERE {_OPEN_RUN} AND id < (SELECT max(id) FROM training_runs WHERE {_OPEN_RUN})")
    op.create_index('uq_model_versions_one_active', 'model_versions', ['status'], unique=True,
                    sqlite_where=sa.text("status = 'active'"), postgresql_where=sa.text("status = 'active'"))
    op.create_index('uq_training_runs_one_open', 'training_runs', [sa.text(f"({_OPEN_RUN})")], unique=True,
                    sqlite_where=sa.text(_OPEN_RUN), postgresql_where=sa.text(_OPEN_RUN))


def downgrade() -> None:
    op.drop_index('uq_training_runs_one_open', table_name='training_runs')
    op.drop_index('uq_model_versions_one_active', table_name='model_versions')
    with op.batch_alter_table('training_runs') as batch:
        batch.drop_column('data_key')
        batch.drop_column('requeues')
        batch.drop_column('heartbeat_at')
    op.drop_index('ix_images_stage_state_next', table_name='images')
    with op.batch_alter_table('images') as batch:
        batch.drop_column('lease_until')
        batch.drop_column('next_attempt_at')
