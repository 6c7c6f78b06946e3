"""Reading CelebA as users have it on disk, the procedural face generator, and the uint8 image cache."""
from data.cache import CachedFaces, FaceCache, load_cache, split_to_device, to_float_images, to_uint8_images

__all__ = [
    "CachedFaces",
    "FaceCache",
    "load_cache",
    "split_to_device",
    "to_float_images",
    "to_uint8_images",
]
