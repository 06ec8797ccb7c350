"""WAL: segment names, archiving one segment, the archive as a whole, prefetch, receive."""
