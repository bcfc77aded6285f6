#!/bin/sh
# PostgreSQL for the compose project's PostgreSQL variant. Runs as root only to prepare, then
# becomes the postgres user (setpriv) and execs the server, which is PID 1.
#
# - The password of the role the daemons use: KDS_DB_PASSWORD_FILE (/db-password/password),
#   in a volume the daemons mount read-only. Made at first start when missing (64 hex digits
#   from /dev/urandom), owned by KDS_DB_PASSWORD_OWNER (10001:10001, the kds image's user),
#   mode 0400. It is never printed and never on a command line: the role's password is set
#   from it at every start, through the server's standard input in single-user mode, so a
#   replaced file takes effect at the next start.
# - The data dir PGDATA (/var/lib/postgresql/data, a volume): initdb at first start, with
#   the database KDS_DB_NAME (kds) owned by the role KDS_DB_USER (kds), which may log in from
#   the project network with its password (scram-sha-256). The superuser postgres has no
#   password and logs in only through the local socket (peer).
set -eu
PGDATA=${PGDATA:-/var/lib/postgresql/data}
password_file=${KDS_DB_PASSWORD_FILE:-/db-password/password}
owner=${KDS_DB_PASSWORD_OWNER:-10001:10001}
db=${KDS_DB_NAME:-kds}
role=${KDS_DB_USER:-kds}
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

case "$db$role" in
*[!a-z0-9_]*) echo "KDS_DB_NAME and KDS_DB_USER: lower-case letters, digits and _ only" >&2; exit 2 ;;
esac

if [ ! -s "$password_file" ]; then
    (
        umask 077
        tmp="$password_file.tmp"
        od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$tmp"
        echo >>"$tmp"
        chown "$owner" "$tmp"
        chmod 0400 "$tmp"
        mv -f "$tmp" "$password_file"
    )
    echo "kds-postgres: made a new password for role $role in $password_file"
fi
password=$(head -n 1 "$password_file")
if [ -z "$password" ]; then
    echo "kds-postgres: $password_file has an empty first line" >&2
    exit 2
fi

mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 0700 "$PGDATA"
first=0
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    as_postgres initdb -D "$PGDATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
        --encoding=UTF8 --no-locale >/dev/null
    echo "host $db $role all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    first=1
    echo "kds-postgres: made a new data dir in $PGDATA"
fi

# The role and its password (single quotes doubled: standard_conforming_strings is on),
# then, at first start, its database. Single-user mode reads the statements from stdin.
quoted=$(printf '%s' "$password" | sed "s/'/''/g")
{
    echo "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN CREATE ROLE $role LOGIN; END IF; END\$\$;"
    echo
    echo "ALTER ROLE $role PASSWORD '$quoted';"
    echo
    if [ "$first" = 1 ]; then
        echo "CREATE DATABASE $db OWNER $role;"
        echo
    fi
} | as_postgres postgres --single -j -D "$PGDATA" postgres >/dev/null
unset password quoted

exec setpriv --reuid=postgres --regid=postgres --init-groups -- \
    postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/run/postgresql
