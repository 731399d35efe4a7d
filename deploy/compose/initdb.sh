#!/bin/sh
# First start of the compose PostgreSQL (docker-entrypoint-initdb.d): the pipeline's login (no
# superuser, no CREATEDB, no CREATEROLE), the Dagster storage database it owns, and the warehouse
# database; `illuma warehouse provision` (the compose `provision` service) does the rest as the admin.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v login="$ILLUMA_PG_LOGIN" -v password="$ILLUMA_PG_PASSWORD" <<'SQL'
CREATE ROLE :"login" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE DATABASE illuma_dagster OWNER :"login";
CREATE DATABASE illuma_warehouse;
SQL
