"""PostgreSQL specifics: the backup login, `pg_dump`/`pg_restore`, and per-table row counts and
checksums read in the dump's own snapshot.

Which login dumps: neither the pipeline's (it holds rights on the platform schema only, ADR 0001)
nor a superuser. `illuma_backup` is a login of its own, made by the admin connection when missing:
member of `pg_read_all_data` (read every table and sequence, USAGE on every schema, nothing else)
and `BYPASSRLS`, because pg_dump turns row security off and must not fail on, or run, a merchant's
row-level policies. It reads, it never writes. Its password derives from the warehouse login
secret (as the merchant logins' do), so nothing stores it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from illuma_pipelines.backups.crypto import BackupError

logger = logging.getLogger(__name__)

BACKUP_LOGIN = "illuma_backup"
# Our counts and checksums of a table, identical on the live database (in the dump's snapshot)
# and on a restored copy: text output with fixed settings, hashed per row and summed (order-free).
_SESSION = "SET search_path = pg_catalog; SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET extra_float_digits = 3; SET row_security = off"
_TABLES = (
    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('information_schema') AND n.nspname !~ '^pg_' "
    "ORDER BY 1, 2"
)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def backup_password() -> str:
    from illuma_pipelines.warehouse_logins import _login_secret  # the one login secret

    return hmac.new(_login_secret(), f"illuma-backup-login\x00{BACKUP_LOGIN}".encode(), hashlib.sha256).hexdigest()


def plain_dsn(url: str) -> str:
    return re.sub(r"^postgres(ql)?(\+psycopg2?)?://", "postgresql://", url)


def dbname_of(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return conninfo_to_dict(plain_dsn(url)).get("dbname") or ""


def same_database(a: str, b: str) -> bool:
    from psycopg.conninfo import conninfo_to_dict

    da, db = conninfo_to_dict(plain_dsn(a)), conninfo_to_dict(plain_dsn(b))
    key = lambda d: (d.get("host") or "localhost", str(d.get("port") or 5432), d.get("dbname"))  # noqa: E731
    return key(da) == key(db)


def ensure_backup_login(warehouse_url: str, admin_url: str | None) -> str:
    """The backup login's DSN to the warehouse's database (password included), creating or
    updating the login through the admin connection when it is missing."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from illuma_pipelines.warehouse_logins import scram_verifier

    dbname = dbname_of(warehouse_url)
    dsn = make_conninfo(plain_dsn(warehouse_url), user=BACKUP_LOGIN, password=backup_password())
    try:
        with psycopg.connect(dsn, connect_timeout=10) as con:
            ok = con.execute(
                "SELECT pg_has_role(current_user, 'pg_read_all_data', 'USAGE'), rolbypassrls FROM pg_roles "
                "WHERE rolname = current_user"
            ).fetchone()
        if ok and ok[0] and ok[1]:
            return dsn
    except psycopg.OperationalError:
        pass
    if not admin_url:
        raise BackupError(
            f"the backup login {BACKUP_LOGIN} is missing or lacks its rights: set ILLUMA_WAREHOUSE_ADMIN_URL "
            "once so it can be provisioned (pg_read_all_data, BYPASSRLS; it never writes)"
        )
    admin = make_conninfo(plain_dsn(admin_url), dbname=dbname)
    verifier = scram_verifier(backup_password())
    logger.info("provisioning the backup login %s through the admin connection", BACKUP_LOGIN)
    with psycopg.connect(admin, autocommit=True) as con:
        exists = con.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [BACKUP_LOGIN]).fetchone()
        attrs = "LOGIN INHERIT BYPASSRLS NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION CONNECTION LIMIT 4"
        con.execute(f"{'ALTER' if exists else 'CREATE'} ROLE {BACKUP_LOGIN} {attrs} PASSWORD '{verifier}'")
        con.execute(f"GRANT pg_read_all_data TO {BACKUP_LOGIN}")
        con.execute(f"GRANT CONNECT ON DATABASE {_quote(dbname)} TO {BACKUP_LOGIN}")
    return dsn


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise BackupError(f"{name} is not installed: install the PostgreSQL client of the server's major version")
    return path


def tool_major(name: str) -> int:
    out = subprocess.run([tool(name), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else 0


def check_versions(con) -> dict:
    """pg_dump must be at least the server's major version (it refuses older servers' newer
    catalogs otherwise); record both in the manifest."""
    server = int(con.execute("SHOW server_version_num").fetchone()[0]) // 10000
    dump = tool_major("pg_dump")
    if dump < server:
        raise BackupError(f"pg_dump {dump} is older than the PostgreSQL server ({server}): install pg_dump {server}")
    return {"server_major": server, "pg_dump_major": dump}


def table_stats(con, tables: list[tuple[str, str]] | None = None) -> dict[str, dict]:
    """{"schema.table": {"rows", "checksum"}} of every table (or of `tables`), in `con`'s
    transaction (which must be open: a table whose column types have no hash function is retried
    under a savepoint)."""
    for statement in _SESSION.split("; "):
        con.execute(statement)
    out = {}
    for schema, table in con.execute(_TABLES).fetchall() if tables is None else tables:
        name = f"{_quote(schema)}.{_quote(table)}"
        try:
            # Hashes each column's binary value with its type's hash: no text formatting, twice
            # as fast as hashing row::text (measured: 2.4 s vs 4.8 s for 1.2M rows). The bigint
            # sum is exact (a numeric result, added in 128 bits): the same figure as summing the
            # hashes cast to numeric, without a numeric addition per row.
            with con.transaction():
                rows, checksum = con.execute(
                    f"SELECT count(*), coalesce(sum(hash_record_extended(t, 0)), 0)::text FROM ONLY {name} t"
                ).fetchone()
        except Exception as exc:  # e.g. a json column: no hash function for its type
            if "hash" not in str(exc):
                raise
            rows, checksum = con.execute(
                f"SELECT count(*), 't:' || coalesce(sum(hashtextextended(t::text, 0)), 0)::text FROM ONLY {name} t"
            ).fetchone()
        out[f"{schema}.{table}"] = {"rows": int(rows), "checksum": checksum}
    return out


def table_stats_parallel(dsn: str, workers: int = 2) -> dict[str, dict]:
    """table_stats of a database no one writes (a restored copy), its tables shared out, largest
    first, among `workers` connections: the server hashes on as many cores."""
    import threading

    import psycopg

    with psycopg.connect(dsn) as con:
        con.execute("SET search_path = pg_catalog")
        sized = con.execute(
            "SELECT n.nspname, c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
            "AND n.nspname NOT IN ('information_schema') AND n.nspname !~ '^pg_' ORDER BY 3 DESC, 1, 2"
        ).fetchall()
    shares: list[list[tuple[str, str]]] = [[] for _ in range(max(1, workers))]
    loads = [0] * len(shares)
    for schema, table, size in sized:
        least = loads.index(min(loads))
        shares[least].append((schema, table))
        loads[least] += size + 8192  # an empty table still costs a query
    out: dict[str, dict] = {}
    failures: list[BaseException] = []

    def count(share: list[tuple[str, str]]) -> None:
        try:
            with psycopg.connect(dsn) as con:
                out.update(table_stats(con, share))
        except BaseException as exc:  # raised below
            failures.append(exc)

    threads = [threading.Thread(target=count, args=(share,), name="restore-table-stats") for share in shares if share]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return dict(sorted(out.items()))


def _env(dsn: str) -> tuple[list[str], dict]:
    """pg tools get the DSN without the password; the password goes through PGPASSWORD."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(dsn)
    env = dict(os.environ)
    if parts.get("password"):
        env["PGPASSWORD"] = str(parts.pop("password"))
    return ["-d", make_conninfo(**parts)], env


@contextmanager
def dump_process(dsn: str, snapshot: str) -> Iterator[subprocess.Popen]:
    """`pg_dump -Fc` of the whole database in `snapshot`, its archive on stdout."""
    target, env = _env(dsn)
    proc = subprocess.Popen(
        [tool("pg_dump"), "-Fc", "--no-password", f"--snapshot={snapshot}", *target],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def restore_command(dsn: str, list_file: str | None, *, clean: bool, no_owner: bool) -> tuple[list[str], dict]:
    target, env = _env(dsn)
    cmd = [tool("pg_restore"), "--no-password", "--single-transaction", "--exit-on-error", *target]
    if list_file:
        cmd.append(f"--use-list={list_file}")
    if clean:
        cmd += ["--clean", "--if-exists"]
    if no_owner:
        cmd += ["--no-owner", "--no-privileges"]
    return cmd, env


def toc_lines_without(toc: str, schemas: set[str]) -> tuple[str, int]:
    """The pg_restore list `toc` without every entry in one of `schemas` (the schema itself, its
    objects, data, ACLs, comments); and how many entries were left out."""
    kept, dropped = [], 0
    for line in toc.splitlines():
        if line.strip() and not line.lstrip().startswith(";") and schemas & set(line.split()):
            dropped += 1
            continue
        kept.append(line)
    return "\n".join(kept) + "\n", dropped
