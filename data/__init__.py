"""Reading CelebA as users have it on disk, the procedural face generator, and the uint8 image cache."""
from data.cache import FaceCache, build_cache, load_cache, load_face_image, preprocess_image, split_to_device
from data.cache import to_float_images, to_uint8_images, write_cache
from data.io import CorruptArtifactError, save_figure
from data.celeba import (
    CELEBA_ATTRIBUTES,
    CelebALayout,
    attribute_columns,
    celeba_image_path,
    find_celeba,
    load_celeba_annotations,
)

__all__ = [
    "CELEBA_ATTRIBUTES",
    "CelebALayout",
    "CorruptArtifactError",
    "attribute_columns",
    "build_cache",
    "celeba_image_path",
    "find_celeba",
    "load_celeba_annotations",
    "load_face_image",
    "preprocess_image",
    "save_figure",
    "FaceCache",
    "load_cache",
    "split_to_device",
    "to_float_images",
    "to_uint8_images",
    "write_cache",
]
