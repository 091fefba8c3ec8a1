"""Photos: safe download (``fetch``, guarded by ``address_guard`` and ``pinning``, with ``errors``,
``retry_policy`` and ``sniff``), decode/normalize/hash (``decode``), content-addressed storage
(``store``). No Celery and no database here: the download task calls these."""

from autodetect.images.decode import (
    UndecodableImage,
    decode_image,
    encode_jpeg,
    hamming,
    normalize,
    perceptual_hash,
)
from autodetect.images.address_guard import AllowList, classify_address
from autodetect.images.errors import FetchError, PermanentFetchError, TransientFetchError
from autodetect.images.fetch import Fetched, Fetcher
from autodetect.images.sniff import sniff_image_type
from autodetect.images.store import ImageStore, StoredObject

__all__ = [
    "AllowList",
    "FetchError",
    "Fetched",
    "Fetcher",
    "ImageStore",
    "PermanentFetchError",
    "StoredObject",
    "TransientFetchError",
    "UndecodableImage",
    "classify_address",
    "decode_image",
    "encode_jpeg",
    "hamming",
    "normalize",
    "perceptual_hash",
    "sniff_image_type",
]
