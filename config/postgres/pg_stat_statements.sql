-- Run once by the postgres image when the compose stack creates its database
-- (/docker-entrypoint-initdb.d): the statements collector reads this extension.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
