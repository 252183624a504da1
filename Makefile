# The few things a person runs. Everything builds one way (--workspace) so
# features unify once and nothing is compiled twice.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PYTHON := $(VENV)/bin/python

# Tests and local runs talk to moto on 127.0.0.1 only: dummy credentials,
# a region, and never the instance metadata endpoint.
export AWS_EC2_METADATA_DISABLED := true
export AWS_ACCESS_KEY_ID ?= testing
export AWS_SECRET_ACCESS_KEY ?= testing
export AWS_REGION ?= eu-west-1
export AWS_DEFAULT_REGION ?= $(AWS_REGION)
export GEOPROV_PYTHON := $(abspath $(PYTHON))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help venv build test lint demo bench-hook bench-failover bench-issuer clean

help:
	@echo "make demo        run the pre-provisioning hook locally against moto with the sample events"
	@echo "make test        build everything and run every test (unit, moto, real binaries)"
	@echo "make lint        cargo fmt --check and clippy -D warnings"
	@echo "make bench-hook  cold start, warm latency, RSS and size: Rust hook vs Python/boto3 hook"
	@echo "make bench-failover  planning time (250 locations x 5 regions) and ALARM-to-records time in moto"
	@echo "make bench-issuer    CSR validations per second; a 500-CSR batch at concurrency 1, 8 and 32 in moto"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	touch $@

build:
	cargo build --workspace --all-targets

test: venv build
	cargo test --workspace

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

demo: venv
	cargo build --workspace --all-targets
	$(PYTHON) scripts/demo_hook.py

bench-hook: venv
	cargo build --workspace --release
	$(PYTHON) bench/hook/bench.py

bench-failover: venv
	cargo build --workspace --release
	cargo bench -p geoprov-tests --bench failover_planner
	cargo bench -p geoprov-tests --bench failover_e2e

bench-issuer: venv
	cargo build --workspace --release
	cargo bench -p geoprov-tests --bench issuer

clean:
	cargo clean
	rm -rf $(VENV) bench/results
