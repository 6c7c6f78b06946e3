"""The convolutional VAE, its loss, checkpoints, image metrics and the attribute judge."""
