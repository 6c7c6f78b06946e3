"""Encoding datasets to latents, attribute directions, difference edits and the AttributeDirections artifact."""
