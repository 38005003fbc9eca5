# rum.pool: one entry point for set-up, tests, demo and benchmarks.
# Every target installs what it needs itself (Debian packages, the venv, libvirtd).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
COLL_LINK := .collections/ansible_collections/rum/pool
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHONPATH := $(CURDIR)/.collections
export ANSIBLE_FORCE_COLOR := 0
# Where the test image and test VMs live: readable by the libvirt-qemu user (not under /root).
export RUM_TEST_STATE ?= /var/lib/rum-pool-test

.PHONY: help setup host venv collection testdata unit coverage integration sanity lint check test mutate mutate-subset demo demo-clean demo-vm bench build clean pester windows-integration windows-report

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup: host venv collection ## install packages, venv, start libvirtd

host: ## Debian packages, libvirtd, default network (idempotent)
	@bash tools/ensure-host.sh

$(BIN)/.stamp: requirements-dev.txt service/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -r requirements-dev.txt
	@touch $@

venv: $(BIN)/.stamp ## the Python venv from requirements-dev.txt (and the webhook service, editable)

collection: ## make the checkout importable as ansible_collections/rum/pool
	@mkdir -p $(dir $(COLL_LINK))
	@test -L $(COLL_LINK) || ln -sfn ../../.. $(COLL_LINK)

testdata: ## GitHub's OpenAPI description and webhook examples from npm (once)
	@bash tools/fetch-test-data.sh

# Branch coverage floor (per cent) for plugins/module_utils and service/ (.coveragerc).
COVERAGE_FLOOR ?= 90

unit: venv collection testdata ## unit tests (no libvirt needed), with branch coverage and its floor
	@mkdir -p .cache/coverage
	@$(BIN)/pytest -q --cov --cov-report= tests/unit
	@$(MAKE) --no-print-directory coverage

coverage: ## the last unit run's branch coverage; fails under COVERAGE_FLOOR for module_utils or service
	@$(BIN)/coverage report --include='plugins/*,service/*'
	@fail=0; for area in plugins/module_utils service; do \
	  total=$$($(BIN)/coverage report --include="$$area/*" --format=total); \
	  echo "branch coverage of $$area: $$total% (floor $(COVERAGE_FLOOR)%)"; \
	  awk -v t="$$total" -v f="$(COVERAGE_FLOOR)" 'BEGIN { exit !(t + 0 < f + 0) }' && fail=1; \
	done; \
	if [ $$fail = 1 ]; then echo "branch coverage under the floor: add tests (see the Missing column)"; exit 1; fi

integration: setup testdata ## integration tests against the real libvirtd (boots test guests)
	@$(BIN)/pytest -q -x --durations=25 tests/integration

sanity: venv ## ansible-test sanity against the installed venv (offline)
	@bash tools/ansible-test-sanity.sh

lint: venv collection ## ansible-lint --profile production
	@$(BIN)/ansible-lint --profile production

check: unit lint ## the fast inner loop

test: setup unit mutate-subset integration sanity lint windows-report ## everything CI runs

mutate: venv collection testdata ## mutation testing of the cores (per-module score, survivors; long)
	@$(BIN)/python tools/mutate.py

mutate-subset: venv collection testdata ## the fast mutation subset (tests/mutation/subset.txt), 100% killed
	@$(BIN)/python tools/mutate.py --subset

pester: ## Pester tests of the Hyper-V modules (needs pwsh and Pester 5; docs/hyperv.md)
	@bash tools/windows-tests.sh pester

windows-integration: ## hyperv_vm on a real Hyper-V host (needs an inventory, see docs/hyperv.md)
	@bash tools/windows-tests.sh integration

windows-report: ## the two above where PowerShell / a Hyper-V host exist, else a NOT RUN line each
	@bash tools/windows-tests.sh --if-available pester integration

demo: setup ## a 2-slot runner pool against the fake GitHub: one job, slot recycled
	@$(BIN)/python tools/demo.py up

demo-clean: setup ## tear the demo pool down (and the single demo VM)
	@$(BIN)/python tools/demo.py down
	@bash tools/demo.sh down

demo-vm: setup ## one plain VM from the test image (rum up), with its SSH command
	@bash tools/demo.sh up

bench: setup testdata ## benchmarks (ratios against baselines measured in the same run)
	@$(BIN)/python bench/run.py

build: venv ## build the Galaxy tarball
	@$(BIN)/ansible-galaxy collection build --force --output-path .cache/dist

clean: ## remove venv and generated files (not the test image cache)
	rm -rf $(VENV) .collections .sanity .cache .pytest_cache tests/output
