"""PostgreSQL's own programs: finding them, running them, reading what they write."""
