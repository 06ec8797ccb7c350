"""The scheduler service: takes backups on schedule and on request (the producer)."""
