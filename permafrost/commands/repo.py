"""Repository commands: keygen, init, decrypt, catalog sync."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from permafrost.backup.lookup import load_manifest, resolve
from permafrost.catalog.sync import sync_catalog
from permafrost.context import Context
from permafrost.errors import ConfigError, UsageError
from permafrost.repo import crypto, keys
from permafrost.repo.config import load_keys, read_config, reprobe_conditional_writes
from permafrost.repo.integrity import check_data_object, check_hashes
from permafrost.repo.manifest import Manifest
from permafrost.repo.pipeline import READ_SIZE, Opened
from permafrost.repo.reader import data_blocks, object_name
from permafrost.storage import ProviderConditions, Storage
from permafrost.storage.conditional import LOCAL, MEANING, Conditional
from permafrost.text import print_json

PLAINTEXT_MODE = 0o600


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = commands.add_parser("keygen", help="print a new encryption key")
    p.add_argument(
        "--pair",
        action="store_true",
        help="print an X25519 pair, BACKUP_PUBLIC_KEY=… and BACKUP_PRIVATE_KEY=… (public-key "
        "mode: backup hosts get the public key only, the restore service the private key)",
    )
    p.set_defaults(handler=keygen, needs_settings=False)

    p = commands.add_parser(
        "init",
        help="create the repository at STORAGE_URL (idempotent)",
        description="Create a Permafrost repository at STORAGE_URL, even where this "
        "deployment's catalog knows another one (a backup refuses that, to catch a mistyped "
        "STORAGE_URL). A file:// bucket's parent directory must exist.",
    )
    p.set_defaults(handler=init)

    p = commands.add_parser(
        "decrypt",
        help="turn a stored object back into its original bytes",
        description="Decrypt and decompress a stored object (a downloaded file, stdin, or a "
        "backup in the bucket) so that plain pg_restore can read it.",
    )
    p.add_argument("file", nargs="?", help="the object (default: stdin)")
    p.add_argument("-o", "--output", help="where to write (default: stdout)")
    p.add_argument("--backup", metavar="ID|latest", help="read this backup's data from the bucket")
    p.add_argument("--database", help="whose backup `latest` means")
    p.add_argument(
        "--part",
        default="data",
        metavar="NAME",
        help="with --backup, which part of a backup dumped in parallel: data (the schema "
        "part, the default) or data-1, data-2, ... (`permafrost show` lists them)",
    )
    p.set_defaults(handler=decrypt)

    p = commands.add_parser("catalog", help="the metadata store")
    sub = p.add_subparsers(dest="catalog_command", required=True, metavar="COMMAND")
    s = sub.add_parser("sync", help="rebuild the catalog from the manifests in the bucket")
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=catalog_sync)
    s = sub.add_parser("migrate", help="apply pending schema migrations")
    s.set_defaults(handler=catalog_migrate)


def keygen(ctx: Context | None, args: argparse.Namespace) -> int:
    if args.pair:
        public, private = keys.generate_pair()
        print(f"BACKUP_PUBLIC_KEY={public}\nBACKUP_PRIVATE_KEY={private}")
        print(
            "Give BACKUP_PUBLIC_KEY to the hosts that take backups and BACKUP_PRIVATE_KEY only to"
            " the restore service; keep a copy of the private key off this server.",
            file=sys.stderr,
        )
        return 0
    print(crypto.generate_key())
    print(
        "Keep this key somewhere other than this server: without it no backup can be opened.",
        file=sys.stderr,
    )
    return 0


def init(ctx: Context, args: argparse.Namespace) -> int:
    """Make (or open) the repository; the bucket's conditional writes probed and recorded."""
    prefix = ctx.settings.storage.prefix
    existed = read_config(ctx.storage, prefix) is not None
    repo = ctx.repository(init=True)  # a new repository is probed as it is made
    now = reprobe_conditional_writes(ctx.storage, prefix)[1] if existed else repo.conditional_writes
    state = "already initialised" if existed else "initialised"
    print(f"repository {state} at {ctx.location} (id {repo.id}, key id {repo.key.key_id})")
    print(f"conditional writes: {now} ({_meaning(ctx.storage, now)}); recorded in permafrost.json")
    return 0


def _meaning(storage: Storage, state: Conditional) -> str:
    return MEANING[state] if isinstance(storage, ProviderConditions) else LOCAL


def decrypt(ctx: Context, args: argparse.Namespace) -> int:
    if args.backup and args.file:
        raise UsageError("give either FILE or --backup, not both")
    manifest = load_manifest(ctx, resolve(ctx, args.backup, args.database)) if args.backup else None
    if manifest is not None and (manifest.parts or args.part != "data"):
        manifest = manifest.part(args.part)  # one object of a backup dumped in parallel
    blocks = _bucket_blocks(ctx, manifest) if manifest else _file_blocks(args.file)
    with _output(args.output) as out:
        name = object_name(manifest) if manifest else (args.file or "stdin")
        opened = Opened(blocks, _keyring(ctx), name)
        plain = hashlib.sha256()
        for chunk in opened.chunks():
            plain.update(chunk)
            out.write(chunk)
        if manifest is not None:
            check_hashes(manifest, opened.stored_sha256, plain.hexdigest())
    return 0


def _keyring(ctx: Context) -> crypto.Keyring:
    try:
        return load_keys(ctx.settings, None)
    except ConfigError:
        if ctx.settings.encryption_key is None:
            raise
    return ctx.repository().keyring  # a passphrase: its salt is in the bucket


def _bucket_blocks(ctx: Context, manifest: Manifest) -> Iterator[bytes]:
    check_data_object(ctx.storage, manifest)
    return data_blocks(ctx.storage, manifest, ctx.settings.storage)


def _file_blocks(path: str | None) -> Iterator[bytes]:
    source: IO[bytes]
    if path and path != "-":
        try:
            source = open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    else:
        source = sys.stdin.buffer
    with source:
        while block := source.read(READ_SIZE):
            yield block


@contextmanager
def _output(path: str | None) -> Iterator[IO[bytes]]:
    """stdout, or a file that appears under its name only once it is complete."""
    if path is None or path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    partial = f"{path}.partial"
    try:
        # A plaintext dump holds the database's rows: readable by its owner only (0600).
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PLAINTEXT_MODE)
        os.fchmod(fd, PLAINTEXT_MODE)  # an existing .partial keeps its mode through O_CREAT
        handle = os.fdopen(fd, "wb")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with handle:
            yield handle
    except BaseException:
        os.unlink(partial)
        raise
    os.replace(partial, path)


def catalog_sync(ctx: Context, args: argparse.Namespace) -> int:
    catalog = ctx.catalog()
    keyring = ctx.repository().keyring if ctx.settings.encryption_key else None
    result = sync_catalog(catalog, ctx.storage, ctx.settings.storage.prefix, keyring)
    if args.json:
        print_json(vars(result))
    else:
        print(
            f"catalog synced with {ctx.storage.url}: {result.added} added, "
            f"{result.updated} updated, {result.removed} marked deleted, "
            f"{result.invalid} unreadable manifests skipped"
        )
    return 0 if result.invalid == 0 else 1


def catalog_migrate(ctx: Context, args: argparse.Namespace) -> int:
    catalog = ctx.catalog()  # connecting applies pending migrations
    applied = catalog.migrate()
    print(f"metadata store schema is up to date ({len(applied)} migrations applied now)")
    return 0
