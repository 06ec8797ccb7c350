"""Copies of the repository elsewhere (COPY_STORAGE_URLS): each a repository of its own, in the
primary's format and keys, that restores without the primary.

target.py opens (or makes) the copy's repository; objects.py copies one object, streaming or
server-side, and reads it back to check its SHA-256; backup.py copies a backup, manifest last;
wal.py copies archived WAL; run.py does it for each destination and records it in the catalog.
"""
