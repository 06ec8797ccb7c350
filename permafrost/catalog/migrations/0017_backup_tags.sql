-- `permafrost list --tag` and the API's ?tag= look backups up by their tags (tags @> ARRAY[...]):
-- a GIN index answers that without reading every backup. SQLite backups (kind 'sqlite') need
-- nothing new: kind is free text, and a file's name is its database.

CREATE INDEX backups_tags ON backups USING gin (tags);
