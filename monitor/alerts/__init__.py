"""The alerts: what is wrong now, as alert rows, and who has been told.

    findings.py   Finding (key, Severity, summary, details, runbook) and Findings
    run.py        what one evaluation reads, each at most once
    rules/        the rules, and `evaluate`, which runs each once
    evaluator.py  the thread, the advisory lock, and applying findings to the alerts table
    outage.py     without the metadata store: metadata_unreachable, source_unreachable
                  (emailed directly, remembered in MONITOR_STATE_DIR by outage_state.py)

The rules, each with its dedup key and severity:

    backup_failed:{db}         critical  the newest backup of a database (per kind) failed
    backup_stale:{db}          critical  no successful backup for MAX_BACKUP_AGE
    scheduler_dead             critical  no leader heartbeat for 5 minutes (the dead-man's switch)
    verification_failed:{db}   warning   the newest verification of a database's backups failed
    wal_lag:{cluster}          critical  the newest archived WAL is older than WAL_MAX_LAG
    wal_gap:{cluster}          critical  the WAL archive has a gap (the bucket, every 15 minutes)
    backup_size:{db}           warning   the newest backup is under 50% or over 200% of the median
    bucket_unreachable         critical  the bucket does not answer
    key_check                  critical  BACKUP_ENCRYPTION_KEY does not open the repository
    lifecycle_drift            warning   `permafrost lifecycle check` fails (S3, hourly)

`job_failed:*` alerts belong to the scheduler, which raises them when a job fails and resolves
them when it next succeeds. The SQL is in permafrost/catalog/alerts.py; the messages are sent by
monitor/notify/.
"""
