"""Encoding datasets to latents, attribute directions, difference edits and the AttributeDirections artifact."""
from attributes.artifact import AttributeDirections, UnknownAttributeError
from attributes.directions import (
    balanced_class_means,
    balanced_mean_directions,
    class_means,
    conditional_directions,
    cosine_similarity_frame,
    enough_samples,
    mean_directions,
    probe_directions,
    project_out,
    score_directions,
)
from attributes.edit import edit_images, edit_latents, lerp, slerp
from attributes.encode import Latents, encode_cache, encode_images

__all__ = [
    "AttributeDirections",
    "Latents",
    "UnknownAttributeError",
    "balanced_class_means",
    "balanced_mean_directions",
    "class_means",
    "conditional_directions",
    "cosine_similarity_frame",
    "edit_images",
    "edit_latents",
    "encode_cache",
    "encode_images",
    "enough_samples",
    "lerp",
    "mean_directions",
    "probe_directions",
    "project_out",
    "score_directions",
    "slerp",
]
