"""Photos: safe download (``fetch``), decode/normalize/hash (``decode``), content-addressed storage
(``store``). No Celery and no database here: the download task calls these."""

from autodetect.images.decode import (
    UndecodableImage,
    decode_image,
    encode_jpeg,
    hamming,
    normalize,
    perceptual_hash,
)
from autodetect.images.fetch import (
    AllowList,
    Fetched,
    Fetcher,
    FetchError,
    PermanentFetchError,
    TransientFetchError,
    backoff_delay,
    classify_address,
    sniff_image_type,
)
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
    "backoff_delay",
    "classify_address",
    "decode_image",
    "encode_jpeg",
    "hamming",
    "normalize",
    "perceptual_hash",
    "sniff_image_type",
]
