-- Acknowledging and silencing alerts, and the log of the notifications sent about them.
--   acknowledged_at/_by, ack_reason:  someone is on it; no more reminders (the alert still shows)
--   silenced_until/_at/_by, silence_reason: no email or webhook post for this alert until then
--                                      (lifting a silence sets silenced_until to that moment)
-- alert_notifications: one row per message (alert, event, its number, channel), as the
-- dashboard's alerts page lists them: delivered, failed (with the error, retried) or pending
-- (no channel configured). `number` tells reminders apart (0 for an opening or a resolution).

ALTER TABLE alerts
    ADD COLUMN acknowledged_at timestamptz,
    ADD COLUMN acknowledged_by text,
    ADD COLUMN ack_reason      text,
    ADD COLUMN silenced_until  timestamptz,
    ADD COLUMN silenced_at     timestamptz,
    ADD COLUMN silenced_by     text,
    ADD COLUMN silence_reason  text;

CREATE TABLE alert_notifications (
    id         bigserial PRIMARY KEY,
    alert_id   bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    alert_key  text NOT NULL,
    event      text NOT NULL,
    number     int NOT NULL DEFAULT 0,
    channel    text NOT NULL,
    recipients text NOT NULL,
    subject    text NOT NULL,
    status     text NOT NULL CHECK (status IN ('delivered', 'failed', 'pending', 'dropped')),
    error      text,
    attempts   int NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (alert_id, event, number, channel)
);

CREATE INDEX alert_notifications_newest ON alert_notifications (updated_at DESC);
