# llmops.onprem developer entry points. `make demo` and `make test` are all a newcomer needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/.tools/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help setup demo demo-down test lint sanity unit security integration molecule cluster docs build clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: ## install everything the demo and tests need (Debian packages, venv, helm, kubectl)
	@tests/tools/setup.sh

demo: setup ## build the lab (podman hosts) and run playbooks/site.yml against inventories/local
	@tests/tools/demo.sh up

demo-down: ## remove the demo lab
	@tests/tools/demo.sh down

test: setup ## run every test layer: lint, sanity, unit, molecule
	@tests/tools/test.sh all

lint: setup ## ansible-lint (production profile)
	@tests/tools/test.sh lint

sanity: setup ## ansible-test sanity in a generated collection tree, then the floor run (ansible-core 2.19, Python 3.11)
	@tests/tools/test.sh sanity

unit: setup ## pytest tests/unit
	@tests/tools/test.sh unit

security: setup ## pytest tests/security (hostile bundles, stores, registries; docs/security.md)
	@tests/tools/test.sh security

integration: setup ## pytest tests/integration (real servers on loopback; not the cluster tests)
	@tests/tools/test.sh integration

molecule: setup ## every molecule scenario (converge, idempotence, verify, destroy)
	@tests/tools/test.sh molecule

cluster: setup ## the Kubernetes test cluster harness and its tests (tests/cluster/run-tests.sh)
	@tests/tools/test.sh cluster

docs: setup ## regenerate docs/roles/*.md from the roles' argument specs
	@python tests/tools/role_docs.py

build: setup ## build the collection tarball
	@ansible-galaxy collection build --force --output-path .cache/dist .

clean: demo-down ## remove the venv, tools and lab state (caches under ~/.cache/llmops-onprem stay)
	rm -rf $(VENV) .venv-floor .tools .lab .cache tests/output
