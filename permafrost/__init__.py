"""Permafrost: PostgreSQL backups to S3-compatible storage, verified by restoring."""

__version__ = "0.1.0"
