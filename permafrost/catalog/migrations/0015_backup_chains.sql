-- Issue 17: chains of base backups. An incremental base backup (PostgreSQL 17+) is taken against
-- a parent (a full or another incremental); the chain starts from a full. Both are read from the
-- manifest's `physical` object; base backups catalogued before chains existed are fulls of their
-- own chain, and logical backups have neither.
ALTER TABLE backups ADD COLUMN parent_id text;
ALTER TABLE backups ADD COLUMN chain_full_id text;
UPDATE backups
SET parent_id = manifest -> 'physical' ->> 'parent_id',
    chain_full_id = coalesce(manifest -> 'physical' ->> 'chain_full_id', id)
WHERE kind = 'base';
CREATE INDEX backups_chain ON backups (chain_full_id) WHERE chain_full_id IS NOT NULL;
