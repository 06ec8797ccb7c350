"""A base backup's chain, restored: the full, its incrementals up to the one asked for, combined.

PostgreSQL 17+ takes incremental base backups (`pg_basebackup --incremental`): each holds the
blocks changed since its parent, and `pg_combinebackup` rebuilds a whole data directory from
the full backup that starts the chain and every incremental after it, in order. A full base
backup is a chain of one and needs no combining.

The order is the operator's safety. The chain is built from the manifests (each incremental
names its parent) and every member's data object is looked at in the bucket before a byte is
downloaded: a member deleted behind the catalog's back is named, with what to do. Free space
is checked for the whole work. The members are downloaded in parallel, each into a file whose
size and SHA-256 must match the signed manifest before it is opened; only then is it decrypted
(every chunk's tag checked before tar sees its bytes) and unpacked into a scratch directory;
`pg_combinebackup` of exactly the cluster's major writes the target data directory, and
`pg_verifybackup` checks every file of the result against the backup_manifest.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from permafrost import layout
from permafrost.backup.lookup import load_manifest, resolve
from permafrost.config.settings import StorageSettings
from permafrost.context import Context
from permafrost.errors import (
    BackupNotFound,
    HashMismatch,
    InsufficientSpace,
    IntegrityError,
    NotFound,
    TargetError,
)
from permafrost.postgres import tools as pgtools
from permafrost.repo.config import Repository
from permafrost.repo.integrity import check_hashes
from permafrost.repo.manifest import Manifest
from permafrost.repo.pipeline import Opened
from permafrost.repo.reader import data_blocks, object_name
from permafrost.storage import Storage
from permafrost.text import human_bytes
from restore.pitr.osuser import OsUser, as_user, chown

Say = Callable[[str], None]
Finder = Callable[[str], Manifest | None]
MARGIN = 256 * 1024 * 1024
PARALLEL = 4  # members downloaded at once (each in parallel ranges of its own)
READ = 4 * 1024 * 1024


def major_of(manifest: Manifest) -> int:
    return int(manifest.physical.get("server_version_num", 0)) // 10000


@dataclass(frozen=True)
class Chain:
    """A full base backup and the incrementals that follow it, oldest first."""

    members: tuple[Manifest, ...]

    @property
    def full(self) -> Manifest:
        return self.members[0]

    @property
    def last(self) -> Manifest:
        return self.members[-1]

    @property
    def incrementals(self) -> tuple[Manifest, ...]:
        return self.members[1:]

    @property
    def cluster(self) -> str:
        return self.last.database

    @property
    def stored_bytes(self) -> int:
        return sum(m.stored_bytes for m in self.members)

    @property
    def dump_bytes(self) -> int:
        return sum(m.dump_bytes for m in self.members)

    def describe(self) -> str:
        """ "full X" or "full X + incrementals A, B" (in order)."""
        text = f"full {self.full.id}"
        if self.incrementals:
            names = ", ".join(m.id for m in self.incrementals)
            text += f" + incremental{'s' if len(self.incrementals) > 1 else ''} {names}"
        return text

    def ids(self) -> list[str]:
        return [m.id for m in self.members]


def build(member: Manifest, find: Finder, prefix: str = "") -> Chain:
    """The chain that ends at member, following each incremental's parent; a parent that
    `find` does not have is named (IntegrityError), with what to do."""
    members = [member]
    current = member
    while current.incremental:
        parent_id = current.parent_id
        if parent_id is None:
            raise IntegrityError(
                f"incremental base backup {current.id} names no parent in its manifest: "
                "it cannot be restored; take a full base backup (`permafrost backup --kind base`)"
            )
        parent = find(parent_id)
        if parent is None:
            raise _missing(member, current, parent_id, prefix)
        if parent in members:
            raise IntegrityError(f"base backup {parent.id} is its own ancestor: the chain loops")
        members.append(parent)
        current = parent
    return Chain(tuple(reversed(members)))


def _missing(member: Manifest, child: Manifest, parent_id: str, prefix: str) -> IntegrityError:
    cluster = member.database
    key = layout.manifest_key(prefix, layout.BASE_TIER, cluster, parent_id)
    full = member.chain_full_id or "unknown"
    what = "the full backup" if parent_id == full else "an incremental"
    return IntegrityError(
        f"base backup {parent_id}, the parent of {child.id} and {what} of the chain "
        f"{member.id} belongs to (full {full}), is missing from the bucket ({key}): {member.id} "
        f"cannot be restored. Recover from a backup outside this chain (pitr --base ID), take "
        f"a new full base backup (`permafrost backup --kind base --cluster {cluster}`), and run "
        "`permafrost catalog sync` so the catalog forgets the missing backup"
    )


def catalog_finder(ctx: Context) -> Finder:
    """Members looked up as `verify` finds a backup: in the catalog, else in the bucket; the
    manifest itself always from the bucket (a catalog row whose manifest is gone is missing)."""

    def find(backup_id: str) -> Manifest | None:
        try:
            return load_manifest(ctx, resolve(ctx, backup_id))
        except (BackupNotFound, NotFound):
            return None

    return find


def load(ctx: Context, member: Manifest) -> Chain:
    return build(member, catalog_finder(ctx), ctx.settings.storage.prefix)


def check_present(storage: Storage, chain: Chain) -> None:
    """Every member's data object is in the bucket, whole: looked at before any download."""
    for m in chain.members:
        key = m.objects["data"]
        try:
            size = storage.head(key).size
        except NotFound:
            raise IntegrityError(
                f"base backup {m.id} ({_role(chain, m)}) is missing its data object {key}: "
                f"{chain.last.id} cannot be restored; take a new full base backup "
                f"(`permafrost backup --kind base --cluster {chain.cluster}`)"
            ) from None
        if size != m.stored_bytes:
            raise IntegrityError(
                f"the data object of base backup {m.id} ({_role(chain, m)}) is {size} bytes; "
                f"its manifest says {m.stored_bytes}: it was truncated or replaced"
            )


def _role(chain: Chain, m: Manifest) -> str:
    if len(chain.members) == 1:
        return "a full backup"
    if m is chain.full:
        return f"the full backup of the chain of {chain.last.id}"
    return f"incremental {chain.members.index(m)} of {len(chain.incrementals)} in the chain"


# --- restoring it -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Restorer:
    """What restoring a chain needs besides the chain: where, as whom, with which programs."""

    repository: Repository
    transfer: StorageSettings
    bin_dirs: tuple[str, ...]
    scratch: Path  # downloads and unpacked members; removed piece by piece as they are used
    user: OsUser | None
    say: Say


def restore(r: Restorer, chain: Chain, data: Path) -> None:
    """The chain's data directory in `data` (existing and empty), checked with pg_verifybackup."""
    check_present(r.repository.storage, chain)
    combine = None
    if chain.incrementals:
        combine = pgtools.cluster_tool(
            r.bin_dirs, "pg_combinebackup", major_of(chain.last), "restoring an incremental chain"
        ).path
    link = combine is not None and major_of(chain.last) >= 18 and _same_device(r.scratch, data)
    check_space(chain, r.scratch, data, link)
    r.say(
        f"download {len(chain.members)} base backup{'s' if len(chain.members) > 1 else ''} "
        f"({chain.describe()}; {human_bytes(chain.stored_bytes)} stored), "
        "each checked by its SHA-256 before it is opened"
    )
    stored = _download_all(r, chain)
    if combine is None:
        _unpack(r, chain.full, stored[chain.full.id], data)
    else:
        dirs = _unpack_all(r, chain, stored)
        r.say(
            f"pg_combinebackup: {len(dirs)} backups into {data}"
            + (" (hard links where a file did not change)" if link else "")
        )
        _combine(combine, dirs, data, r.user, link)
        for folder in dirs:
            shutil.rmtree(folder, ignore_errors=True)
    verify_files(r.bin_dirs, chain, data, r.user, r.say)


def _same_device(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def check_space(chain: Chain, scratch: Path, data: Path, link: bool) -> None:
    """Room for the downloads and unpacked members (scratch) and the combined result (data);
    the combined directory is at most the members' sizes added up."""
    unpacked = chain.dump_bytes if chain.incrementals else 0
    result = chain.dump_bytes
    if link:  # unchanged files are hard links to the unpacked full: only rebuilt files take room
        result = sum(m.dump_bytes for m in chain.incrementals)
    needs = {scratch: chain.stored_bytes + unpacked, data: result}
    if _same_device(scratch, data):
        needs = {data: chain.stored_bytes + unpacked + result}
    for folder, need in needs.items():
        free = shutil.disk_usage(folder).free
        if free < need + MARGIN:
            raise InsufficientSpace(
                f"{folder} has {human_bytes(free)} free, and restoring {chain.describe()} needs "
                f"{human_bytes(need + MARGIN)} there: free some space, or choose another "
                "directory (RESTORE_TMPDIR for the scratch files)"
            )


def _download_all(r: Restorer, chain: Chain) -> dict[str, Path]:
    paths = {m.id: r.scratch / f"{m.id}.pfe" for m in chain.members}
    with ThreadPoolExecutor(min(PARALLEL, len(chain.members)), "member") as pool:
        done = [pool.submit(_download, r, m, paths[m.id]) for m in chain.members]
        for future in done:
            future.result()  # the first failure ends the restore; the scratch directory goes
    return paths


def _download(r: Restorer, m: Manifest, path: Path) -> None:
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("wb") as out:
            for block in data_blocks(r.repository.storage, m, r.transfer):
                digest.update(block)
                size += len(block)
                out.write(block)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise InsufficientSpace(
                f"{r.scratch} filled up while downloading base backup {m.id}"
            ) from None
        raise
    if size != m.stored_bytes or digest.hexdigest() != m.stored_sha256:
        raise HashMismatch(
            f"the stored bytes of base backup {m.id} do not match its manifest's SHA-256: the "
            f"object {m.objects['data']} is damaged; nothing was unpacked. Restore from another "
            "backup (pitr --base ID) and take a new full base backup"
        )


def _unpack_all(r: Restorer, chain: Chain, stored: dict[str, Path]) -> list[Path]:
    dirs = [r.scratch / m.id for m in chain.members]
    for folder in dirs:
        folder.mkdir(mode=0o700)
        chown(folder, r.user)
    r.say(f"unpack {len(dirs)} backups into scratch directories in {r.scratch}")
    with ThreadPoolExecutor(min(PARALLEL, len(dirs)), "unpack") as pool:
        done = [
            pool.submit(_unpack, r, m, stored[m.id], folder)
            for m, folder in zip(chain.members, dirs, strict=True)
        ]
        for future in done:
            future.result()
    return dirs


def _file_blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(READ):
            yield block


def _unpack(r: Restorer, m: Manifest, stored: Path, into: Path) -> None:
    """Decrypt (each chunk's tag checked first), decompress and untar one member into `into`."""
    opened = Opened(_file_blocks(stored), r.repository.keyring, object_name(m))
    tar = subprocess.Popen(
        ["tar", "-x", "--no-same-owner", "-C", str(into), "-f", "-"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **as_user(r.user),
    )
    assert tar.stdin is not None and tar.stderr is not None
    dump = hashlib.sha256()
    try:
        for chunk in opened.chunks():
            dump.update(chunk)
            tar.stdin.write(chunk)
        tar.stdin.close()
    except BrokenPipeError:
        pass  # tar stopped reading: its exit status says why
    except BaseException:
        tar.kill()
        tar.wait()
        raise
    errors = tar.stderr.read().decode(errors="replace").strip()
    if tar.wait() != 0:
        if "No space left" in errors:
            raise InsufficientSpace(f"{into} filled up while unpacking base backup {m.id}")
        raise TargetError(f"unpacking base backup {m.id} failed: {errors.splitlines()[-1:]}")
    check_hashes(m, opened.stored_sha256, dump.hexdigest())
    stored.unlink(missing_ok=True)


def _combine(tool: str, dirs: list[Path], data: Path, user: OsUser | None, link: bool) -> None:
    # --no-sync: the server started on the result syncs the data directory before recovery
    # (the backup's pg_control says it was running), as it does after a full's tar.
    command = [tool, *map(str, dirs), "--output", str(data), "--no-sync"]
    if link:
        command.append("--link")
    result = subprocess.run(command, capture_output=True, text=True, check=False, **as_user(user))
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        message = lines[-1].removeprefix("pg_combinebackup: ").removeprefix("error: ")
        if "No space left" in message:
            raise InsufficientSpace(f"{data} filled up while combining the chain: {message}")
        raise IntegrityError(f"pg_combinebackup could not combine the chain: {message}")


def verify_files(
    bin_dirs: tuple[str, ...], chain: Chain, data: Path, user: OsUser | None, say: Say
) -> None:
    """Every file of the restored data directory against its backup_manifest."""
    tool = pgtools.cluster_tool(
        bin_dirs, "pg_verifybackup", major_of(chain.last), "checking a base backup"
    ).path
    result = subprocess.run(
        [tool, "--no-parse-wal", "--quiet", str(data)],
        capture_output=True,
        text=True,
        check=False,
        **as_user(user),
    )
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no output"])[0]
        raise IntegrityError(
            f"the restored base backup {chain.last.id} does not match its backup_manifest: "
            f"{first.removeprefix('pg_verifybackup: ')}"
        )
    files = chain.last.physical.get("files")
    said = f" ({files})" if files and not chain.incrementals else ""
    say(f"pg_verifybackup: every file{said} matches backup_manifest")
