"""buyer and speed: the columns behind SQL offers, the in-memory dedup index, usable prices and
training exclusions

- ``listings.place_lat/place_lon``: where a listing is (its own coordinates, else its postal code's
  centroid), indexed after the class and the status for the offers search (a model's active listings
  in a bounding box, counted and found from the index).
- ``listings.buying_options``, ``bid_count``, ``price_issue``: how the listing is sold, and why its price
  cannot count in price statistics (NULL: it can).
- ``images.original_seq``: the order in which photos were decided originals by dedup (serialized), so a
  dedup worker's in-memory hash index catches up by one indexed range query.
- ``images.excluded_reason``: why a photo is left out of training (not a car, a contradicted label).
- ``price_models``: the fitted fair-price models, one row per fit of the catalogue.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 04:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('listings') as batch:
        batch.add_column(sa.Column('place_lat', sa.Float(), nullable=True))
        batch.add_column(sa.Column('place_lon', sa.Float(), nullable=True))
        batch.add_column(sa.Column('buying_options', sa.String(length=60), nullable=True))
        batch.add_column(sa.Column('bid_count', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('price_issue', sa.String(length=120), nullable=True))
        batch.create_index('ix_listings_class_place', ['class_id', 'status', 'place_lat', 'place_lon'])
    _backfill_places()
    with op.batch_alter_table('images') as batch:
        batch.add_column(sa.Column('original_seq', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('excluded_reason', sa.String(length=200), nullable=True))
        batch.create_index('ix_images_original_seq', ['original_seq'], unique=True)
    # The originals dedup decided so far, numbered in id order (UPDATE ... FROM: PostgreSQL, SQLite >= 3.33).
    op.execute("UPDATE images SET original_seq = numbered.seq FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY id) "
               "AS seq FROM images WHERE duplicate_of_id IS NULL AND stage IN ('inference', 'done') "
               "AND phash IS NOT NULL) AS numbered WHERE images.id = numbered.id")
    op.create_index('ix_listing_predictions_version_class', 'listing_predictions',
                    ['model_version_id', 'top_class'])
    op.create_table(
        'price_models',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('fitted_at', sa.DateTime(), nullable=False),
        sa.Column('catalogue_key', sa.String(length=64), nullable=False),
        sa.Column('listings', sa.Integer(), nullable=False),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_price_models_catalogue_key', 'price_models', ['catalogue_key'])


#: Listings placed per statement of the backfill (bounds its memory on a big catalogue).
_BACKFILL_BATCH = 5000


def _backfill_places() -> None:
    """Each listing's place as the offers search used to compute it on every request
    (``autodetect.serving.places.place_columns``: its own coordinates when valid, else its postal code's
    centroid, offline), in batches by id."""
    from autodetect.serving.places import place_columns

    listings = sa.table('listings', *(sa.column(c) for c in (
        'id', 'latitude', 'longitude', 'postal_code', 'country', 'place_lat', 'place_lon')))
    conn = op.get_bind()
    update = (listings.update().where(listings.c.id == sa.bindparam('row_id'))
              .values(place_lat=sa.bindparam('lat'), place_lon=sa.bindparam('lon')))
    last_id = None
    while True:
        query = (sa.select(listings.c.id, listings.c.latitude, listings.c.longitude, listings.c.postal_code,
                           listings.c.country)
                 .where(sa.or_(listings.c.latitude.is_not(None), listings.c.postal_code.is_not(None)))
                 .order_by(listings.c.id).limit(_BACKFILL_BATCH))
        if last_id is not None:
            query = query.where(listings.c.id > last_id)
        rows = conn.execute(query).all()
        if not rows:
            return
        last_id = rows[-1].id
        placed = [{'row_id': r.id, 'lat': p['place_lat'], 'lon': p['place_lon']}
                  for r in rows for p in [place_columns(r.latitude, r.longitude, r.postal_code, r.country)]
                  if p['place_lat'] is not None]
        if placed:
            conn.execute(update, placed)


def downgrade() -> None:
    op.drop_index('ix_price_models_catalogue_key', table_name='price_models')
    op.drop_table('price_models')
    op.drop_index('ix_listing_predictions_version_class', table_name='listing_predictions')
    with op.batch_alter_table('images') as batch:
        batch.drop_index('ix_images_original_seq')
        batch.drop_column('excluded_reason')
        batch.drop_column('original_seq')
    with op.batch_alter_table('listings') as batch:
        batch.drop_index('ix_listings_class_place')
        batch.drop_column('price_issue')
        batch.drop_column('bid_count')
        batch.drop_column('buying_options')
        batch.drop_column('place_lon')
        batch.drop_column('place_lat')
