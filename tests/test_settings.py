from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from permafrost.config.envfile import load_env_file
from permafrost.config.settings import Settings
from permafrost.errors import ConfigError


def test_it_reads_the_reference_deployment_names() -> None:
    settings = Settings.from_env(
        {
            "DB_HOST": "db.internal",
            "DB_PORT": "6543",
            "DB_NAME": "shop, billing",
            "DB_USER": "backup",
            "DB_PASSWORD": "pw",
            "DO_SPACES_KEY": "key",
            "DO_SPACES_SECRET": "secret",
            "DO_SPACES_BUCKET": "backups",
            "DO_SPACES_REGION": "fra1",
        }
    )
    assert settings.source.databases == ("shop", "billing")
    assert settings.source.conninfo("shop") == {
        "dbname": "shop",
        "host": "db.internal",
        "port": "6543",
        "user": "backup",
    }
    assert settings.source.password is not None and settings.source.password.reveal() == "pw"
    assert settings.storage.url == "s3://backups"
    assert settings.storage.endpoint_url == "https://fra1.digitaloceanspaces.com"
    assert settings.storage.provider == "spaces"
    assert settings.storage.addressing_style == "virtual"
    assert settings.storage.region == "fra1"


def test_it_reads_database_url_with_the_db_names_filling_what_it_leaves_out() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u:p%40ss@h:5433/app?sslmode=require",
            "DB_HOST": "h",
            "STORAGE_URL": "s3://bkt/some/prefix/",
            "S3_ENDPOINT_URL": "http://127.0.0.1:9000",
            "S3_PROVIDER": "minio",
        }
    )
    assert settings.source.host == "h" and settings.source.port == 5433
    assert settings.source.password is not None and settings.source.password.reveal() == "p@ss"
    assert settings.source.databases == ("app",)
    assert ("sslmode", "require") in settings.source.options
    assert (settings.storage.bucket, settings.storage.prefix) == ("bkt", "some/prefix")
    assert settings.storage.addressing_style == "path"


def test_it_defaults_to_a_local_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.storage.url == f"file://{tmp_path}/.permafrost/bucket"
    assert settings.storage.prefix == ""


def test_it_reads_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("from-a-file\n")
    settings = Settings.from_env(
        {"BACKUP_ENCRYPTION_KEY_FILE": str(tmp_path / "key"), "BACKUP_ENCRYPTION_KEY": "from-env"}
    )
    assert settings.encryption_key is not None
    assert settings.encryption_key.reveal() == "from-a-file"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DB_PORT": "five"}, "DB_PORT"),
        ({"S3_PROVIDER": "azure"}, "S3_PROVIDER"),
        ({"STORAGE_URL": "ftp://x"}, "STORAGE_URL"),
        ({"STORAGE_URL": "s3://"}, "STORAGE_URL"),
        ({"DB_NAME": "../etc"}, "DB_NAME"),
        ({"UPLOAD_PART_SIZE_MB": "1"}, "UPLOAD_PART_SIZE_MB"),
        ({"COMPRESSION_LEVEL": "40"}, "COMPRESSION_LEVEL"),
        ({"S3_ENDPOINT_URL": "ftp://x"}, "S3_ENDPOINT_URL"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
        ({"BACKUP_ENCRYPTION_KEY_FILE": "/nonexistent/key"}, "BACKUP_ENCRYPTION_KEY_FILE"),
    ],
)
def test_it_refuses_a_bad_value_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_it_reads_each_concern_into_its_section() -> None:
    settings = Settings.from_env(
        {
            "COMPRESSION_LEVEL": "9",
            "COMPRESSION_THREADS": "1",
            "WAL_MAX_SEGMENT_AGE": "60",
            "WAL_PREFETCH": "3",
            "WAL_SPOOL_DIR": "/spool",
            "WAL_SLOT_NAME": "pf_slot",
            "RESTORE_TMPDIR": "/scratch",
            "RESTORE_JOBS": "5",
            "VERIFY_DATABASE_URL": "postgresql://u:p@verify/postgres",
            "PITR_OS_USER": "pg",
        }
    )
    assert (settings.compression.level, settings.compression.threads) == (9, 1)
    wal = settings.wal
    assert (wal.max_segment_age, wal.prefetch, wal.spool_dir, wal.slot) == (
        60,
        3,
        "/spool",
        "pf_slot",
    )
    restore = settings.restore
    assert (restore.tmpdir, restore.jobs, restore.pitr_os_user) == ("/scratch", 5, "pg")
    assert restore.verify_url is not None and "verify" in restore.verify_url.reveal()


def test_it_keeps_nothing_of_the_environment_it_did_not_read() -> None:
    settings = Settings.from_env({"UNRELATED_TOKEN": "hunter2-unrelated"})
    assert "hunter2-unrelated" not in str(asdict(settings))


def test_it_never_shows_secrets_in_its_repr() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u:hunter2-db@h/app",
            "S3_SECRET_ACCESS_KEY": "hunter2-s3",
            "BACKUP_ENCRYPTION_KEY": "hunter2-key",
            "METADATA_DATABASE_URL": "postgresql://u:hunter2-m@h/m",
        }
    )
    text = repr(settings)
    assert "hunter2" not in text
    assert "********" in text


def test_it_reads_env_files(tmp_path: Path) -> None:
    path = tmp_path / "permafrost.env"
    path.write_text("# comment\nexport DB_NAME=shop\nDB_PASSWORD='quoted value'\n\nX=\"1\"\n")
    assert load_env_file(str(path)) == {"DB_NAME": "shop", "DB_PASSWORD": "quoted value", "X": "1"}
    path.write_text("not a setting\n")
    with pytest.raises(ConfigError, match="line 1"):
        load_env_file(str(path))


@pytest.mark.parametrize(
    ("env", "names"),
    [
        (
            {"DATABASE_URL": "postgresql://u@h/nosuchdb", "DB_NAME": "shop"},
            ("DATABASE_URL says database 'nosuchdb'", "DB_NAME says 'shop'"),
        ),
        (
            {"DATABASE_URL": "postgresql://u@h:5433/app", "DB_PORT": "5432"},
            ("DATABASE_URL says port 5433", "DB_PORT says 5432"),
        ),
        (
            {"DATABASE_URL": "postgresql://u@h/app", "DB_HOST": "other"},
            ("DATABASE_URL says host 'h'", "DB_HOST says 'other'"),
        ),
        (
            {"DATABASE_URL": "postgresql://u@h/app", "DB_USER": "backup"},
            ("DATABASE_URL says user 'u'", "DB_USER says 'backup'"),
        ),
        (
            {"STORAGE_URL": "s3://one/prefix", "DO_SPACES_BUCKET": "two"},
            ("STORAGE_URL says bucket 'one'", "DO_SPACES_BUCKET says 'two'"),
        ),
        (
            {"STORAGE_URL": "file:///srv/bucket", "S3_BUCKET": "two"},
            ("STORAGE_URL says bucket 'file:///srv/bucket'", "S3_BUCKET says 'two'"),
        ),
        (
            {"S3_REGION": "eu-west-1", "DO_SPACES_REGION": "fra1"},
            ("S3_REGION says region 'eu-west-1'", "DO_SPACES_REGION says 'fra1'"),
        ),
        (
            {"S3_ENDPOINT_URL": "https://a.example", "DO_SPACES_ENDPOINT": "b.example"},
            ("S3_ENDPOINT_URL says endpoint", "DO_SPACES_ENDPOINT says 'https://b.example'"),
        ),
    ],
)
def test_it_refuses_conflicting_settings_naming_both(env: dict[str, str], names: tuple) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    message = str(refused.value)
    assert message.startswith("conflicting settings: ") and "\n" not in message
    for part in names:
        assert part in message
    assert "remove one of them or make them agree" in message


@pytest.mark.parametrize(
    "env",
    [
        {"DATABASE_URL": "postgresql://u:hunter2-url@h/app", "DB_PASSWORD": "hunter2-env"},
        {"S3_SECRET_ACCESS_KEY": "hunter2-s3", "DO_SPACES_SECRET": "hunter2-do"},
        {"S3_ACCESS_KEY_ID": "hunter2-id", "DO_SPACES_KEY": "hunter2-key"},
    ],
)
def test_it_refuses_conflicting_secrets_without_showing_them(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    message = str(refused.value)
    assert "hunter2" not in message and "'********'" in message
    assert all(name in message for name in env)


def test_it_accepts_settings_that_agree() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u:pw@h:5432/shop",
            "DB_NAME": "shop",
            "DB_HOST": "h",
            "DB_PORT": "5432",
            "DB_USER": "u",
            "DB_PASSWORD": "pw",
            "STORAGE_URL": "s3://permafrost/backups",
            "S3_BUCKET": "permafrost",
            "S3_ENDPOINT_URL": "https://fra1.digitaloceanspaces.com/",
            "DO_SPACES_ENDPOINT": "fra1.digitaloceanspaces.com",
        }
    )
    assert settings.source.databases == ("shop",)
    server = Settings.from_env({"DATABASE_URL": "postgresql://u@h", "DB_NAME": "a, b"})
    assert server.source.databases == ("a", "b")  # a URL without a database, DB_NAME lists them


def test_every_entry_point_refuses_a_conflict_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    env_file = tmp_path / "permafrost.env"
    env_file.write_text("DB_NAME=shop\nDB_PASSWORD=hunter2-file\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PERMAFROST_ENV_FILE": str(env_file),
        "DATABASE_URL": "postgresql://backup:hunter2-shell@127.0.0.1:1/nosuchdb",
    }
    for command in (["backup"], ["scheduler"], ["restore-worker"], ["monitor"], ["list"]):
        result = subprocess.run(
            [sys.executable, "-m", "permafrost", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert "DATABASE_URL says database 'nosuchdb' but DB_NAME says 'shop'" in result.stderr
        assert "hunter2" not in result.stderr


def test_the_monitors_gunicorn_entry_refuses_a_conflict_with_the_same_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.services import free_port

    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    result = subprocess.run(
        [gunicorn, "--bind", f"127.0.0.1:{free_port()}", "--workers", "1", "monitor.wsgi:app"],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "DATABASE_URL": "postgresql://backup@127.0.0.1:1/nosuchdb",
            "DB_NAME": "shop",
        },
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 4, result.stderr[-2000:]  # gunicorn: "App failed to load."
    assert (
        "permafrost: error: conflicting settings: DATABASE_URL says database 'nosuchdb' but "
        "DB_NAME says 'shop'"
    ) in result.stderr
    assert "Traceback" not in result.stderr
