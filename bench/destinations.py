"""Backup throughput to each destination, against S3, measured in one run.

    python bench/destinations.py [--size-gb 0.5] [--data-dir bench/.data] [--keep] [--runs 2]

Builds (or reuses, as bench/backup.py does) a database of the chosen size, starts every test
server on loopback (moto's S3 server, Azurite, gcp-storage-emulator, OpenSSH's sshd, the same
ones the tests use: tests/services.py, tests/destinations.py), and times `permafrost backup` of
that database to each, alternating the order from run to run:

  permafrost->file    file:// (the floor: no network, no server)
  permafrost->s3      s3:// on moto's server (the baseline the others are compared to)
  permafrost->azure   azure:// on Azurite (in memory)
  permafrost->gcs     gs:// on gcp-storage-emulator (in memory)
  permafrost->sftp    sftp:// on sshd, into a directory on the local disk

`paired` is the median over runs of (wall / permafrost->s3's wall in the same run). All servers
are emulators on the same 2-core machine as the backup, so these figures compare the client
side of each destination (its SDK, its multipart shape, its CPU cost) and each emulator's speed,
not the clouds' own throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import harness
from harness import GB, MB, META_DB, PERMAFROST, ROOT, BenchCluster, Sample, measure

from permafrost.config.env import Secret
from permafrost.config.storage import AzureSettings, GcsSettings, SftpSettings, StorageSettings
from permafrost.repo import crypto
from permafrost.storage import Storage, open_storage
from tests.destinations import AZURITE_ACCOUNT, AZURITE_KEY, Azurite, GcsEmulator, SshServer
from tests.services import S3Server

BUCKET = "bench"
QUIET_LIMIT = 20.0  # seconds to wait for a quiet machine before measuring anyway


class Destinations:
    def __init__(self, cluster: BenchCluster, database: str, work: Path) -> None:
        self.cluster, self.database, self.work = cluster, database, work
        self.key = crypto.generate_key()
        self.s3 = S3Server()
        self.azurite = Azurite()
        self.gcs = GcsEmulator()
        self.sshd = SshServer()
        self.s3.client().create_bucket(Bucket=BUCKET)
        self.azurite.create_container(BUCKET)
        self.gcs.create_bucket(BUCKET)
        self.sftp_dir = self.sshd.directory("repository")

    def stop(self) -> None:
        for server in (self.s3, self.azurite, self.gcs, self.sshd):
            server.stop()

    def urls(self) -> dict[str, str]:
        return {
            "permafrost->file": f"file://{self.work / 'repository'}",
            "permafrost->s3": f"s3://{BUCKET}/bench",
            "permafrost->azure": f"azure://{BUCKET}/bench",
            "permafrost->gcs": f"gs://{BUCKET}/bench",
            "permafrost->sftp": self.sshd.url(self.sftp_dir),
        }

    def env(self, url: str) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(self.work),
            "DATABASE_URL": self.cluster.url(self.database),
            "METADATA_DATABASE_URL": self.cluster.url(META_DB),
            "BACKUP_ENCRYPTION_KEY": self.key,
            "STORAGE_URL": url,
            "S3_ENDPOINT_URL": self.s3.url,
            "S3_REGION": "us-east-1",
            "S3_ACCESS_KEY_ID": "testing",
            "S3_SECRET_ACCESS_KEY": "testing",
            "S3_PROVIDER": "generic",
            "AZURE_STORAGE_CONNECTION_STRING": self.azurite.connection_string,
            "GCS_ENDPOINT_URL": self.gcs.endpoint,
            **self.sshd.env(),
        }

    def storage(self, variant: str) -> Storage:
        """The destination, to clear what a run stored."""
        url = self.urls()[variant]
        if variant == "permafrost->s3":
            from tests.storage.test_contract import s3_settings

            return open_storage(s3_settings(self.s3, BUCKET))
        if variant == "permafrost->azure":
            azure = AzureSettings(
                account=AZURITE_ACCOUNT, key=Secret(AZURITE_KEY), endpoint=self.azurite.endpoint
            )
            return open_storage(StorageSettings(url=url, azure=azure))
        if variant == "permafrost->gcs":
            return open_storage(
                StorageSettings(url=url, gcs=GcsSettings(endpoint=self.gcs.endpoint))
            )
        if variant == "permafrost->sftp":
            sftp = SftpSettings(known_hosts=self.sshd.known_hosts, key_file=self.sshd.client_key)
            return open_storage(StorageSettings(url=url, sftp=sftp))
        return open_storage(StorageSettings(url=url))

    def prepare(self) -> None:
        if not self.cluster.execute(f"SELECT 1 FROM pg_database WHERE datname = '{META_DB}'"):
            self.cluster.create_database(META_DB)
        for url in self.urls().values():
            init_run([PERMAFROST, "init"], self.env(url))

    def backup(self, variant: str, run: int) -> Sample:
        argv = [PERMAFROST, "backup", "--database", self.database, "--json"]
        log = self.work / f"{variant.replace('>', '')}.log"
        measured = measure(argv, self.env(self.urls()[variant]), log)
        text = log.read_text()
        record = json.loads(text[text.index("{") :])
        self.clear(variant)
        return Sample(
            **asdict(measured), variant=variant, run=run, output_bytes=record["size_bytes"]
        )

    def clear(self, variant: str) -> None:
        storage = self.storage(variant)
        prefix = "" if variant in ("permafrost->file", "permafrost->sftp") else "bench/"
        for item in list(storage.list(f"{prefix}standard/")):
            storage.delete(item.key)


def init_run(argv: list[str], env: dict[str, str]) -> None:
    import subprocess

    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed: {result.stderr}")


def run_all(bench: Destinations, runs: int) -> list[Sample]:
    variants = list(bench.urls())
    samples = []
    for run in range(1, runs + 1):
        shift = (run - 1) % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            sample = bench.backup(variant, run)
            samples.append(sample)
            print(
                f"  run {run} {sample.variant:<18} {sample.wall_s:7.2f} s"
                f"  cpu {sample.cpu_s:5.2f}  host {sample.host_cpu_s:5.2f}"
                f"  quiet {sample.quiet}",
                flush=True,
            )
    return samples


def table(samples: list[Sample], dump_bytes: int) -> list[str]:
    walls = {(s.variant, s.run): s.wall_s for s in samples}
    runs = sorted({s.run for s in samples})
    lines = [
        "| Destination | wall s (min–max) | MB/s of dump | cpu s | host s | stored MB "
        "| paired × s3 |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in dict.fromkeys(s.variant for s in samples):
        mine = [s for s in samples if s.variant == variant]
        wall = statistics.median(s.wall_s for s in mine)
        paired = statistics.median(
            walls[variant, run] / walls["permafrost->s3", run] for run in runs
        )
        lines.append(
            f"| {variant} | {wall:.2f} ({min(s.wall_s for s in mine):.1f}–"
            f"{max(s.wall_s for s in mine):.1f}) | {dump_bytes / MB / wall:.0f} | "
            f"{statistics.median(s.cpu_s for s in mine):.2f} | "
            f"{statistics.median(s.host_cpu_s for s in mine):.2f} | "
            f"{statistics.median(s.output_bytes for s in mine) / MB:.1f} | {paired:.2f} |"
        )
    return lines


def dump_size(bench: Destinations) -> int:
    import subprocess

    from tests.services import PASSWORD, SUPERUSER

    proc = subprocess.Popen(
        [
            str(bench.cluster.bin / "pg_dump"),
            "-Fc",
            "-Z0",
            "-h",
            "127.0.0.1",
            "-p",
            str(bench.cluster.port),
            "-U",
            SUPERUSER,
            "-d",
            bench.database,
        ],
        env={**os.environ, "PGPASSWORD": PASSWORD},
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    size = 0
    while block := proc.stdout.read(1024 * 1024):
        size += len(block)
    if proc.wait() != 0:
        sys.exit("the warm-up pg_dump failed")
    return size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=0.5)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "bench" / ".data")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    # A shared machine is rarely quiet: wait a little for it, then measure anyway (said).
    quiet = harness.wait_for_quiet
    harness.wait_for_quiet = lambda limit=QUIET_LIMIT: quiet(limit)  # type: ignore[assignment]
    cluster = BenchCluster(args.data_dir / "cluster").start()
    work = args.data_dir / "destinations"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bench = None
    try:
        database, size = harness.ensure_database(cluster, args.data_dir, args.size_gb)
        bench = Destinations(cluster, database, work)
        bench.prepare()
        dump = dump_size(bench)
        print(f"database {database}: {size / GB:.2f} GB, dump {dump / MB:.0f} MB", flush=True)
        samples = run_all(bench, args.runs)
        lines = table(samples, dump)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(f"\n{stamp}: {size / GB:.2f} GB database, {dump / MB:.0f} MB dump, {args.runs} runs")
        print("\n".join(lines))
        (work / "results.json").write_text(json.dumps([asdict(s) for s in samples], indent=2))
    finally:
        if bench is not None:
            bench.stop()
        cluster.stop()
        if not args.keep:
            shutil.rmtree(cluster.root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
