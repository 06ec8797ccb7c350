"""The cost of public-key and KMS encryption against the symmetric key, measured in one run.

    python bench/keys.py [--size-gb 0.2] [--runs 3] [--segments 8]

One moto server (S3 and KMS), one throwaway cluster with a database of --size-gb (a table of
md5 text and numbers, which zstd compresses about 2x), and real WAL segments (wal.make_segments).
Three modes:

  symmetric   BACKUP_ENCRYPTION_KEY (the baseline)
  public key  BACKUP_PUBLIC_KEY only, as the backup hosts run
  kms         KMS_KEY_ID, a key made on the moto server (one DescribeKey + GenerateDataKey per
              process: every `permafrost` command pays them once)

Each round runs the three modes in an order that rotates from round to round: a whole
`permafrost backup` of the database, and `permafrost wal-push` of each segment (a new process
per segment, as archive_command runs it). Each mode writes to its own prefix of one bucket.
Also, in process: the cost of wrapping one object's data key (an Encryptor made, 2000 times) per
mode, and the KMS calls a process makes once (DescribeKey + GenerateDataKey, on moto: a local
server, so a real KMS adds its network round trips).
Figures are medians; ratios are to the symmetric mode's median of the same run. Printed, and
written as JSON to bench/.data/keys.json; nothing is asserted.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import PERMAFROST
from wal import command_env, make_segments, run_timed, storage_env

from permafrost.repo import keys
from tests.services import Cluster, S3Server

MODES = ("symmetric", "public key", "kms")
KEY = base64.b64encode(bytes(range(32))).decode()


def mode_envs(s3: S3Server, bucket: str, home: Path) -> dict[str, dict[str, str]]:
    import boto3

    kms = boto3.client(
        "kms",
        endpoint_url=s3.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    kms_key = kms.create_key(Description="permafrost bench")["KeyMetadata"]["KeyId"]
    public, _ = keys.generate_pair()
    base = {k: v for k, v in storage_env(s3, bucket).items() if k != "BACKUP_ENCRYPTION_KEY"}
    extra = {
        "symmetric": {"BACKUP_ENCRYPTION_KEY": KEY},
        "public key": {"BACKUP_PUBLIC_KEY": public},
        "kms": {"KMS_KEY_ID": kms_key},
    }
    return {
        mode: command_env(
            home, {**base, "STORAGE_URL": f"s3://{bucket}/{mode.replace(' ', '-')}"}, **values
        )
        for mode, values in extra.items()
    }


def build(cluster: Cluster, size_gb: float) -> tuple[str, int]:
    database = cluster.create_database("bench_keys")
    rows = int(size_gb * 1e9 / 260)  # about 260 bytes a row on disk, indexes included
    print(f"building {database}: {rows} rows ...", flush=True)
    cluster.execute(
        "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz, amount numeric, body text);"
        "INSERT INTO events SELECT g, '2026-01-01'::timestamptz + g * interval '1 second',"
        f" g * 1.25, md5(g::text) || ' ' || md5((g * 7)::text) || ' event ' || (g % 1000)"
        f" || ' ' || md5((g * 13)::text) FROM generate_series(1, {rows}) g",
        database,
    )
    ((size,),) = cluster.execute(f"SELECT pg_database_size('{database}')", database)
    return database, int(size)


def rotated(round_: int) -> list[str]:
    shift = round_ % len(MODES)
    return [*MODES[shift:], *MODES[:shift]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=0.2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(__file__).parent / ".data",
        help="where keys.json is written",
    )
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="permafrost-bench-keys-"))
    s3 = S3Server()
    cluster = Cluster("bench-keys", {"max_wal_size": "'4GB'"}).start()
    try:
        database, size = build(cluster, args.size_gb)
        s3.client().create_bucket(Bucket="bench-keys")
        envs = mode_envs(s3, "bench-keys", work)
        for env in envs.values():
            env.update(DATABASE_URL=cluster.url(database), DB_NAME=database)
        (work / "segments").mkdir()
        print(f"making {args.segments} WAL segments ...", flush=True)
        segments = make_segments(args.segments, work / "segments")
        report = measure(envs, segments, args.runs)
        report |= wrap_costs(envs["kms"])
    finally:
        cluster.destroy()
        s3.stop()
    report["database_bytes"] = size
    show(report)
    (args.data_dir / "keys.json").write_text(json.dumps(report, indent=2) + "\n")


def measure(envs: dict[str, dict[str, str]], segments: list[Path], runs: int) -> dict:
    backup: dict[str, list[float]] = {m: [] for m in MODES}
    push: dict[str, list[float]] = {m: [] for m in MODES}
    for round_ in range(runs):
        for mode in rotated(round_):
            print(f"round {round_ + 1}: backup, {mode}", flush=True)
            backup[mode].append(run_timed([PERMAFROST, "backup"], envs[mode]))
        if round_ == 0:  # each segment once per mode: wal-push refuses nothing, skips nothing
            for index, path in enumerate(segments):
                for mode in rotated(index):
                    push[mode].append(run_timed([PERMAFROST, "wal-push", str(path)], envs[mode]))
    return {
        "runs": runs,
        "segments": len(segments),
        "backup_s": {m: statistics.median(v) for m, v in backup.items()},
        "wal_push_s": {m: statistics.median(v) for m, v in push.items()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def wrap_costs(kms_env: dict[str, str]) -> dict:
    from permafrost.config.settings import Settings
    from permafrost.repo import crypto
    from permafrost.repo.kms import kms_key

    public = keys.PublicKey(base64.b64decode(keys.generate_pair()[0]))
    kms = kms_key(Settings.from_env(kms_env))
    started = time.perf_counter()
    kms.current()
    first_call = time.perf_counter() - started
    costs = {}
    for mode, key in (("symmetric", crypto.MasterKey(bytes(32))), ("public key", public)):
        costs[mode] = _per_object(key)
    costs["kms"] = _per_object(kms)
    return {"wrap_us_per_object": costs, "kms_calls_per_process_s": first_call}


def _per_object(key: object, count: int = 2000) -> float:
    from permafrost.repo import crypto

    started = time.perf_counter()
    for _ in range(count):
        crypto.Encryptor(key, compressed=True)  # type: ignore[arg-type]
    return (time.perf_counter() - started) / count * 1e6


def show(report: dict) -> None:
    print(
        f"\ndatabase {report['database_bytes'] / 1e6:.0f} MB, {report['runs']} backup runs, "
        f"{report['segments']} segments pushed per mode (medians; ratio to symmetric)"
    )
    for what in ("backup_s", "wal_push_s"):
        base = report[what]["symmetric"]
        for mode in MODES:
            value = report[what][mode]
            print(f"  {what[:-2]:<9} {mode:<11} {value:7.3f} s  x{value / base:.3f}")
    for mode, micros in report["wrap_us_per_object"].items():
        print(f"  wrap of one object's data key, {mode:<11} {micros:8.1f} µs")
    print(
        f"  KMS DescribeKey + GenerateDataKey, once per process: "
        f"{report['kms_calls_per_process_s'] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
