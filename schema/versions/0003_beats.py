"""beats: the last time each periodic job ran (the sweeper), for ``autodetect doctor``

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 02:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'beats',
        sa.Column('name', sa.String(length=40), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('beats')
