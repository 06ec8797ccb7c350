"""The documents operators read must agree with the code."""

from __future__ import annotations

import re
from pathlib import Path

from permafrost.cli import EXIT_CODES, EXIT_INTERRUPTED, build_parser
from permafrost.config.settings import Env, _parse

ROOT = Path(__file__).resolve().parent.parent


# Read by docker-compose.yml and ./setup.sh, not by the settings (tests/test_stack_files.py).
STACK_ONLY = {
    "METADATA_PASSWORD",
    "PG_MAJORS",
    "PERMAFROST_VERSION",
    "NATIVE_PG_PORT",
    "BASE_IMAGE",
    "PG_SOURCE",
    "MAILPIT_PORT",
    "MINIO_CONSOLE_PORT",
    "WORKER_REPLICAS",
}


def test_env_example_lists_every_variable_the_settings_read() -> None:
    read: set[str] = {"PERMAFROST_ENV_FILE", *STACK_ONLY}
    for values in ({}, {"DO_SPACES_BUCKET": "b"}, {"DATABASE_URL": "postgresql://h/d"}):
        env = Env(values)
        _parse(env)
        # NAME_FILE twins of secrets are documented once, as NAME (SOURCES_FILE is no twin)
        read |= {n for n in env.asked if not (n.endswith("_FILE") and n[:-5] in env.asked)}
    documented = set(
        re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    )
    assert read - documented == set(), "add these to .env.example"
    assert documented - read == set(), "these are in .env.example but nothing reads them"


def test_the_readme_documents_every_exit_code() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", readme, re.MULTILINE))
    codes = {code for _, code in EXIT_CODES} | {0, 1, EXIT_INTERRUPTED}
    assert {int(code) for code in rows} == codes


def test_the_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    lines = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert lines == ["./setup.sh", "./setup.sh test"]


def test_every_command_the_readme_shows_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    used = set(re.findall(r"\bpermafrost ([a-z][a-z-]+)", readme))
    assert used - commands == set()


def readme_commands() -> list[list[str]]:
    """Every `permafrost …` command line in the README's code blocks, as argument lists."""
    import shlex

    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:sh|bash)?\n(.*?)```", readme, re.DOTALL)
    found = []
    for block in blocks:
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line)  # a trailing comment
            line = line.rstrip("'")  # archive_command = '… permafrost … %p'
            match = re.search(r"(?:^|[\s/])permafrost\s+(.*)$", line)
            if match and not line.lstrip().startswith("#"):
                found.append(shlex.split(match.group(1)))
    return found


def test_every_command_line_the_readme_shows_parses() -> None:
    parser = build_parser()
    commands = readme_commands()
    assert len(commands) > 40
    for args in commands:
        if any("…" in a or "..." in a for a in args):
            continue
        try:
            parser.parse_args(args)
        except SystemExit:
            shown = " ".join(args)
            raise AssertionError(
                f"README shows `permafrost {shown}`, which does not parse"
            ) from None
