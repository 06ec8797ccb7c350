"""The library's own subcommands: keygen, init, decrypt, catalog, and the WAL commands."""
