"""The bucket's format: encryption, the repository config, manifests, the streaming pipeline."""
