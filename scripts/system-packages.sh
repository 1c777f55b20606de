#!/usr/bin/env bash
# Installs the Debian packages the tests use, only those missing: as root with apt-get, otherwise it names them
# in one line and fails. `make test` runs it first, so a fresh machine needs nothing but `make test`.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

missing=()
need() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' || missing+=("$1"); }
command -v java >/dev/null 2>&1 || need openjdk-17-jdk-headless             # Spark (and javac for the test jar)
command -v javac >/dev/null 2>&1 || need openjdk-17-jdk-headless
[ -f /usr/share/java/postgresql.jar ] || need libpostgresql-jdbc-java        # SparkJDBCOperator tests
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need postgresql       # PostgreSQL metastore tests
command -v redis-server >/dev/null 2>&1 || need redis-server                 # Celery broker
[ -x /usr/bin/chromium ] || need chromium                                    # browser tests (Playwright)
[ "${#missing[@]}" -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
  echo "Error: the tests need these Debian packages: ${missing[*]}; install them (sudo apt-get install ${missing[*]}) and run make test again" >&2
  exit 1
fi
echo "[setup] installing: ${missing[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
