"""The convolutional VAE, its loss, checkpoints, image metrics and the attribute judge."""
import data.progress  # noqa: F401  (before models.classifier imports tqdm.auto: no widget warning in Jupyter)
