"""The `permafrost` command: the composition root that dispatches to the service packages.

Expected failures are `PermafrostError`s: one line on stderr and an exit code from EXIT_CODES,
the only place where exception classes meet exit codes (the README's table copies it).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from permafrost import __version__, errors, logs
from permafrost.config.envfile import environment
from permafrost.config.fleet import load_fleet
from permafrost.config.settings import Settings
from permafrost.context import Context
from permafrost.logs import LogFormat
from permafrost.text import error_line

# Most specific first: the first class an error is an instance of decides its code.
EXIT_CODES: list[tuple[type[errors.PermafrostError], int]] = [
    (errors.UsageError, 2),
    (errors.ConfigError, 2),
    (errors.LockUnsupported, 15),
    (errors.ObjectLocked, 16),
    (errors.BackupNotFound, 3),
    (errors.NotFound, 3),
    (errors.EncryptionKeyError, 4),
    (errors.IntegrityError, 5),
    (errors.StorageError, 6),
    (errors.SourceError, 7),
    (errors.TargetError, 7),
    (errors.ToolMissing, 7),
    (errors.CatalogUnavailable, 8),
    (errors.TargetExists, 9),
    (errors.InsufficientSpace, 10),
    (errors.Busy, 11),
    (errors.CheckFailed, 12),
    (errors.SystemMismatch, 13),
    (errors.KmsUnavailable, 14),
]
EXIT_INTERRUPTED = 130


def exit_code(exc: errors.PermafrostError) -> int:
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return 1


def build_parser() -> argparse.ArgumentParser:
    # The composition root: imported here, not at the top, so that `permafrost.cli`'s helpers
    # (EXIT_CODES, exit_code) load without every service's command-line module.
    from monitor import cli as monitor_cli
    from permafrost.commands import copy as copy_cli
    from permafrost.commands import doctor as doctor_cli
    from permafrost.commands import repo as commands
    from permafrost.commands import wal as wal_cli
    from permafrost.commands import worker as worker_cli
    from restore import cli as restore_cli
    from restore import worker as restore_worker
    from restore.drills import cli as drill_cli
    from restore.pitr import cli as pitr_cli
    from scheduler import cli as scheduler_cli
    from scheduler import lifecycle_cli, lock_cli, retention_cli
    from scheduler import tasks as scheduler_tasks

    parser = argparse.ArgumentParser(
        prog="permafrost",
        description="PostgreSQL backups to S3-compatible storage, verified by restoring.",
    )
    parser.add_argument(
        "--env-file",
        metavar="FILE",
        help="read settings from FILE as well (default: $PERMAFROST_ENV_FILE)",
    )
    parser.add_argument("--version", action="version", version=f"permafrost {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    commands_ = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    scheduler_cli.add_parsers(commands_)
    restore_cli.add_parsers(commands_)
    pitr_cli.add_parsers(commands_)
    drill_cli.add_parsers(commands_)
    commands.add_parsers(commands_)
    wal_cli.add_parsers(commands_)
    doctor_cli.add_parsers(commands_)
    copy_cli.add_parsers(commands_)
    lifecycle_cli.add_parsers(commands_)
    retention_cli.add_parsers(commands_)
    lock_cli.add_parsers(commands_)
    monitor_cli.add_parsers(commands_)
    # A worker runs backups (the scheduler's jobs) and the restore kinds: composed here.
    worker_handlers = {"backup": scheduler_tasks.run_backup_task, **restore_worker.HANDLERS}
    worker_cli.add_parsers(commands_, worker_handlers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    parser = build_parser()
    args = parser.parse_args(argv)
    service = logs.service_of(args.command)
    detail = logging.DEBUG if args.verbose else logging.WARNING
    logs.configure(service, LogFormat.TEXT, detail)
    ctx: Context | None = None
    try:
        if getattr(args, "needs_settings", True):
            ctx = Context(Settings.from_env(environment(args.env_file)))
            load_fleet(ctx.settings)  # a bad SOURCES_FILE is refused before anything runs
            level = detail if args.verbose else ctx.settings.log_level
            logs.configure(service, ctx.settings.log_format, level)
        return int(args.handler(ctx, args))
    except errors.PermafrostError as exc:
        return _ended(f"error: {error_line(exc)}", exit_code(exc))
    except KeyboardInterrupt:
        return _ended("interrupted; nothing partial was kept", EXIT_INTERRUPTED)
    except BrokenPipeError:
        _silence_stdout()
        return 0
    finally:
        if ctx is not None:
            ctx.close()


def _ended(text: str, code: int) -> int:
    """The one last line: plain on stderr, or a record where a service logs logfmt or JSON."""
    if logs.structured() and logs.configured_service() != logs.CLI:
        logging.getLogger("permafrost").error(
            "%s", text.removeprefix("error: "), extra={"event": "exit", "exit_code": code}
        )
    else:
        print(f"permafrost: {text}", file=sys.stderr)
    return code


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so uploads are aborted and failures recorded on the way out.
    raise KeyboardInterrupt


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
