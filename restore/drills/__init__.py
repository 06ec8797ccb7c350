"""PITR drills: a recovery to a recent moment, measured (restore/drills/run.py)."""
