"""Point-in-time recovery: the plan, the recovery server, the copy into a database, its CLI."""
