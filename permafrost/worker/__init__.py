"""Backup workers: the claim loop every worker runs (loop.py), the WAL stream that runs once per
cluster on whichever worker holds its lock (streams.py), and queueing backups for them
(queue.py)."""
