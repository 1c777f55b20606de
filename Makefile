# sparkflow: `make demo` runs the count_trips_sql Spark DAG end to end; `make test` runs every test.
# Both set up everything they need (a .venv with sparkflow and pyspark) on a fresh machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SPARKFLOW_HOME ?= $(HOME)/sparkflow
DEMO_DATA := $(SPARKFLOW_HOME)/data/fhvhv_tripdata_2024-01.csv
# Spark drivers started here bind to loopback only.
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: demo test test-fast lint bench check-java system-packages clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "sparkflow needs Python 3.11 or newer; found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[spark,postgres,dev]'
	@touch $(STAMP)

# Debian packages the tests use (PostgreSQL, Redis, Chromium, the JDBC driver, a JDK): installed when root,
# named in one line otherwise.
system-packages:
	@bash scripts/system-packages.sh

check-java:
	@command -v java >/dev/null 2>&1 || { echo "Error: Java 17+ is required to run Spark and 'java' is not on PATH; install a JDK/JRE 17 (e.g. apt-get install openjdk-17-jre-headless)" >&2; exit 1; }

demo: $(STAMP) check-java
	$(BIN)/sparkflow db init
	$(BIN)/sparkflow connections import --overwrite conf/connections.yaml
	@test -s "$(DEMO_DATA)" || $(BIN)/python jobs/generate_trips.py "$(DEMO_DATA)"
	SPARKFLOW_DAGS_FOLDER="$${SPARKFLOW_DAGS_FOLDER:-$(CURDIR)/jobs}" $(BIN)/sparkflow trigger count_trips_sql --wait

test: system-packages $(STAMP) check-java
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "Error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not spark" tests

lint: $(STAMP)
	$(BIN)/ruff check sparkflow tests bench jobs
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/vulture

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
