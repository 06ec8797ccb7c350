-- Heartbeats of the services other than the scheduler (whose rows stay in `heartbeats`): each
-- restore worker and the evaluating monitor rewrite their row every beat; a cleanly stopped one
-- sets stopped_at. The monitor alerts when workers that were seen stop beating (service_dead)
-- and when a task stays queued longer than TASK_MAX_WAIT (task_stuck).

CREATE TABLE service_heartbeats (
    service    text NOT NULL CHECK (service IN ('worker', 'monitor')),
    instance   text NOT NULL,
    host       text NOT NULL,
    pid        int NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    beat_at    timestamptz NOT NULL DEFAULT now(),
    stopped_at timestamptz,
    details    jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (service, instance)
);
CREATE INDEX service_heartbeats_beat ON service_heartbeats (service, beat_at DESC);
