#!/bin/sh
# Runs once, as the image's superuser, when the pgdata volume is first initialised
# (the postgres image runs /docker-entrypoint-initdb.d/*.sh). It creates crossfid's
# application role WITHOUT superuser rights (CREATEROLE only, so that `crossfid db init`
# can create the read-only role crossfid_reader and `db grant-reader` analysts' logins),
# hands it the database, and takes from PUBLIC the large-object functions with which any
# role could write data outside tables: only a superuser can revoke those. docs/security.md.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_password="${CROSSFID_APP_PASSWORD:?set CROSSFID_APP_PASSWORD}" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE crossfid LOGIN NOSUPERUSER NOCREATEDB CREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'app_password';
ALTER DATABASE :"db" OWNER TO crossfid;
REVOKE EXECUTE ON FUNCTION pg_catalog.lo_from_bytea(oid, bytea), pg_catalog.lo_create(oid),
    pg_catalog.lo_creat(integer), pg_catalog.lo_import(text), pg_catalog.lo_import(text, oid) FROM PUBLIC;
SQL
