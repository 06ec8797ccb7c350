"""A Docker engine and the images the container test needs, on a machine with no registry.

    python3 scripts/containers.py prepare   packages, engine, base image, wheelhouse, image
    python3 scripts/containers.py engine    only start the engine (when none answers)
    python3 scripts/containers.py stop      stop the engine this script started (by its pid)

Everything is cached under ${PERMAFROST_CACHE:-<repo>/.cache}/docker and reused by the next run:
the engine's data root (images and build cache), the base image's root file system and the
wheelhouse. Nothing here is needed by a user who can pull images: `docker compose build` alone
builds the image from the default base image and PyPI.

- Packages: Debian's docker.io, debootstrap and docker-compose, installed with apt-get when missing.
- Engine: dockerd on the default socket with its own --data-root and --pidfile, logging to a file.
- Base image: `debootstrap --variant=minbase bookworm` (the root file system of the official
  debian:bookworm-slim), imported as debian:bookworm-slim so a FROM line resolves it.
- Wheelhouse: the project's dependencies, its build backend and the test stand-ins' packages
  (moto's server, aiosmtpd) as wheels built on this machine with `pip wheel`, copied into the build
  context's wheelhouse/ so the image installs them with `pip install --no-index`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("PERMAFROST_CACHE") or ROOT / ".cache") / "docker"
PIDFILE = CACHE / "dockerd.pid"
BASE_IMAGE = "debian:bookworm-slim"
IMAGE = "permafrost:test"
# The stand-ins of docker-compose.test.yml run from the project's image: moto's S3 server for
# MinIO, aiosmtpd for Mailpit. The user's image has neither (EXTRA_REQUIREMENTS is empty).
STANDINS = "moto[server]>=5 aiosmtpd>=1.4"
BUILD_ARGS = {
    "BASE_IMAGE": BASE_IMAGE,
    "PG_SOURCE": "debian",
    "PG_MAJORS": "15",
    "EXTRA_REQUIREMENTS": STANDINS,
}


def say(text: str) -> None:
    print(f"containers: {text}", file=sys.stderr, flush=True)


def die(text: str) -> None:
    say(f"error: {text}")
    sys.exit(1)


def timed(step: str, action: Callable[[], str]) -> None:
    """Run one step and print its time in one line: `containers: engine 3.2s (started)`."""
    started = time.monotonic()
    outcome = action()
    say(f"{step} {time.monotonic() - started:.1f}s ({outcome})")


def run(*command: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=True, text=True, **kwargs)  # type: ignore[call-overload]


def answers(*command: str) -> bool:
    return subprocess.run(command, capture_output=True).returncode == 0


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) where present, else v1 (`docker-compose`)."""
    if answers("docker", "compose", "version"):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return []


def packages() -> str:
    wanted = [
        package
        for command, package in (("dockerd", "docker.io"), ("debootstrap", "debootstrap"))
        if not shutil.which(command)
    ]
    if not compose_command():
        wanted.append("docker-compose")
    if not wanted:
        return "present"
    if not shutil.which("apt-get"):
        die(f"missing {' '.join(wanted)} and no apt-get here: install them by hand")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-qq", env=env)
    run(
        "apt-get",
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        *wanted,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return f"installed {' '.join(wanted)}"


def engine() -> str:
    if answers("docker", "info"):
        return "answers"
    if os.geteuid() != 0:
        die("no Docker engine answers and starting one needs root")
    CACHE.mkdir(parents=True, exist_ok=True)
    log = (CACHE / "dockerd.log").open("ab")
    command = ["dockerd", "--data-root", str(CACHE / "data"), "--pidfile", str(PIDFILE)]
    subprocess.Popen(
        command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while not answers("docker", "info"):
        if time.monotonic() > deadline:
            die(f"dockerd did not answer within 60s: see {CACHE / 'dockerd.log'}")
        time.sleep(0.5)
    return f"started, pid {PIDFILE.read_text().strip()}, log {CACHE / 'dockerd.log'}"


def stop() -> str:
    if not PIDFILE.exists():
        return "not started by this script"
    pid = int(PIDFILE.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        PIDFILE.unlink(missing_ok=True)
        return "was not running"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.2)
    if alive(pid):
        die(f"dockerd (pid {pid}) still runs 30 s after SIGTERM: see {CACHE / 'dockerd.log'}")
    return f"stopped pid {pid}"


def alive(pid: int) -> bool:
    """Running, not a zombie: a dockerd this process started stays one until it is reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def base_image() -> str:
    if answers("docker", "image", "inspect", BASE_IMAGE):
        return "present"
    rootfs = CACHE / "rootfs"
    if rootfs.exists():
        shutil.rmtree(rootfs)  # a debootstrap that did not finish
    run("debootstrap", "--variant=minbase", "bookworm", str(rootfs), stdout=subprocess.DEVNULL)
    slim(rootfs)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    run("docker", "import", "-", BASE_IMAGE, stdin=tar.stdout, stdout=subprocess.DEVNULL)
    if tar.wait() != 0:
        die("tar of the debootstrap root file system failed")
    shutil.rmtree(rootfs)
    return f"debootstrap and import as {BASE_IMAGE}"


# What makes the official image "slim" (debuerreotype's slimify and its apt settings): dpkg
# leaves out documentation, manuals and translations; apt keeps no downloaded package or cache.
SLIM_FILES = {
    "etc/dpkg/dpkg.cfg.d/docker": (
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
        "path-exclude /usr/share/info/*\npath-exclude /usr/share/man/*\n"
        "path-exclude /usr/share/groff/*\npath-exclude /usr/share/linda/*\n"
        "path-exclude /usr/share/lintian/overrides/*\npath-exclude /usr/share/locale/*\n"
    ),
    "etc/apt/apt.conf.d/docker-clean": (
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
    ),
    "etc/apt/apt.conf.d/docker-no-languages": 'Acquire::Languages "none";\n',
    "etc/apt/apt.conf.d/docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "etc/apt/apt.conf.d/docker-autoremove-suggests": (
        'Apt::AutoRemove::SuggestsImportant "false";\n'
    ),
}


def slim(rootfs: Path) -> None:
    for name, text in SLIM_FILES.items():
        (rootfs / name).write_text(text)
    for pattern in (
        "usr/share/info/*",
        "usr/share/man/*",
        "usr/share/locale/*",
        "usr/share/groff/*",
        "usr/share/lintian/overrides/*",
        "var/cache/apt/archives/*.deb",
        "var/cache/apt/*.bin",
        "var/lib/apt/lists/*",
    ):
        for path in rootfs.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in (rootfs / "usr/share/doc").glob("*/*"):
        if path.name != "copyright":
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def wheelhouse_key() -> str:
    """What the wheels depend on: the dependencies and the build backend, not the whole file."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*pyproject["project"]["dependencies"], *pyproject["build-system"]["requires"]]
    return hashlib.sha256(json.dumps([wanted, STANDINS]).encode()).hexdigest()[:16]


def wheelhouse() -> str:
    wheels = CACHE / "wheelhouse"
    stamp = wheels / f".key-{wheelhouse_key()}"
    if not stamp.exists():
        if wheels.exists():
            shutil.rmtree(wheels)
        wheels.mkdir(parents=True)
        pip = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check"]
        with (CACHE / "wheelhouse.log").open("w") as log:
            result = subprocess.run(
                [
                    *pip,
                    "--wheel-dir",
                    str(wheels),
                    str(ROOT),
                    "setuptools>=68",
                    "wheel",
                    *STANDINS.split(),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if result.returncode != 0:
            die(f"pip wheel failed: see {CACHE / 'wheelhouse.log'}")
        for own in wheels.glob("permafrost-*.whl"):
            own.unlink()  # the image builds the project from its source
        stamp.touch()
        outcome = "built"
    else:
        outcome = "up to date"
    context = ROOT / "wheelhouse"
    for old in context.glob("*.whl"):
        old.unlink()
    for wheel in wheels.glob("*.whl"):
        shutil.copy2(wheel, context / wheel.name)
    return f"{outcome}, {len(list(wheels.glob('*.whl')))} wheels"


def revision() -> str:
    result = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return result.stdout.strip() or "unknown"


def project_image(tag: str = IMAGE) -> str:
    """Build the image as `tag`: the stand-ins' image (docker-compose.test.yml). The test's
    setup.sh builds permafrost:VERSION with the same arguments, from the layers cached here."""
    args = [f"--build-arg={name}={value}" for name, value in BUILD_ARGS.items()]
    args.append(f"--build-arg=REVISION={revision()}")
    log = CACHE / "build.log"
    with log.open("w") as out:
        command = ["docker", "build", *args, "-t", tag, str(ROOT)]
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        die(f"docker build failed: see {log}")
    size = run("docker", "image", "inspect", "-f", "{{.Size}}", tag, capture_output=True)
    return f"{tag}, {int(size.stdout) / 1e6:.0f} MB, log {log}"


def prepare() -> None:
    timed("packages", packages)
    timed("engine", engine)
    timed("base image", base_image)
    timed("wheelhouse", wheelhouse)
    timed("image", project_image)


def main() -> int:
    action = sys.argv[1] if len(sys.argv) > 1 else "prepare"
    if action == "prepare":
        prepare()
    elif action == "engine":
        timed("packages", packages)
        timed("engine", engine)
    elif action == "stop":
        timed("engine stop", stop)
    else:
        die(f"unknown action {action!r} (use prepare, engine or stop)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
