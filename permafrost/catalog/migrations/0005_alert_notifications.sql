-- Alert notifications: what the on-call person has been told about each alert, and the retry
-- state of a delivery that failed, so an email is neither sent twice nor lost.
--   runbook:              the command to run first (from the evaluator's rule)
--   notified_at:          (0004) when the opening, or the last reminder, was delivered
--   reminded_count:       reminders delivered while the alert stayed active
--   resolved_notified_at: when the resolution was delivered
--   notify_sent:          channels ('event:channel') that already have the pending event, so a
--                         retry after a partial failure sends only what is missing
--   notify_error:         the last delivery error (never a secret), notify_attempts in a row,
--                         next_notify_at: no delivery before then (backoff, 1 minute to 1 hour)
-- alert_checks: the cached results of the slower checks (WAL gaps every 15 minutes, lifecycle
-- rules hourly), shared by every monitor process, so several workers do not repeat them.

ALTER TABLE alerts
    ADD COLUMN runbook              text,
    ADD COLUMN reminded_count       int NOT NULL DEFAULT 0,
    ADD COLUMN resolved_notified_at timestamptz,
    ADD COLUMN notify_sent          text[] NOT NULL DEFAULT '{}',
    ADD COLUMN notify_error         text,
    ADD COLUMN notify_attempts      int NOT NULL DEFAULT 0,
    ADD COLUMN next_notify_at       timestamptz;

-- History from before notifications existed is not announced now.
UPDATE alerts SET resolved_notified_at = coalesce(resolved_at, now()) WHERE status = 'resolved';

CREATE INDEX alerts_to_notify ON alerts (id)
    WHERE status = 'active' OR resolved_notified_at IS NULL;

CREATE TABLE alert_checks (
    name       text PRIMARY KEY,
    checked_at timestamptz NOT NULL,
    findings   jsonb NOT NULL DEFAULT '[]'
);
