"""SQLite files: consistent snapshots with the online backup API, their facts, their checks."""
