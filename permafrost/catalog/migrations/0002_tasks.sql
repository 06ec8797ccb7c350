-- The task queue: work one service asks another to do (verify, test_restore, backup).
-- Workers claim with FOR UPDATE SKIP LOCKED, are woken by NOTIFY permafrost_tasks, and hold an
-- advisory lock on the task id while they run it, so a task whose worker died can be requeued.

CREATE TABLE tasks (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL,
    payload      jsonb NOT NULL DEFAULT '{}',
    status       text NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    requested_by text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    worker       text,
    attempts     int NOT NULL DEFAULT 0,
    error        text,
    result       jsonb
);
CREATE INDEX tasks_queued ON tasks (id) WHERE status = 'queued';
CREATE INDEX tasks_running ON tasks (id) WHERE status = 'running';
