#!/bin/sh
# Write the secrets of deploy/docker-compose.yml into deploy/secrets/ (git-ignored), once:
#   secrets/postgres_password        the database password (compose secret of postgres)
#   secrets/grafana_admin_password   Grafana's admin password (compose secret of grafana)
#   secrets/obsqc.env                OBSQC_API_TOKEN and OBSQC_DATABASE_URL (env file of the obsqc services)
# Existing files are kept, so running it again changes nothing. Usage: deploy/make-secrets.sh [DIR]
set -eu
dir="${1:-$(dirname "$0")/secrets}"
mkdir -p "$dir"
umask 077

random() {
    # 32 characters from [A-Za-z0-9]: safe inside a URL without escaping
    LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32
}

[ -s "$dir/postgres_password" ] || random >"$dir/postgres_password"
[ -s "$dir/grafana_admin_password" ] || random >"$dir/grafana_admin_password"
if [ ! -s "$dir/obsqc.env" ]; then
    {
        echo "# obsqc's secrets (env file of the obsqc services of deploy/docker-compose.yml)"
        echo "OBSQC_API_TOKEN=$(random)"
        echo "OBSQC_DATABASE_URL=postgresql+psycopg://obsqc:$(cat "$dir/postgres_password")@postgres:5432/obsqc"
    } >"$dir/obsqc.env"
fi
# The containers run as uid 10001 (obsqc), 999 (postgres) and 472 (grafana): compose mounts secret files
# with the host's permissions, so they must be readable by those users.
chmod 0644 "$dir/postgres_password" "$dir/grafana_admin_password"
echo "secrets in $dir: postgres_password, grafana_admin_password, obsqc.env (API token: see OBSQC_API_TOKEN there)"
