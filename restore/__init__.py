"""The restore service: list, show, verify and restore backups (the consumer)."""
