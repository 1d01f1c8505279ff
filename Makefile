# ironlb: the two commands a new user needs are `make lab` and `make test` (as root, Debian 12).
# Everything is installed on demand and cached: apt packages once, the virtualenv when
# pyproject.toml or constraints.txt change, kube-apiserver/kubectl/etcd and the peers the tests
# run (ExternalDNS) per version (outside the repository, in $(IRONLB_CACHE)).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export IRONLB_CACHE ?= $(HOME)/.cache/ironlb
STAMPS := $(IRONLB_CACHE)/stamps

# Tools the lab and the tests run: namespaces and probes, kube-proxy emulation, the three
# BGP implementations ironlb is proven against, and PowerDNS (with dig) for ExternalDNS.
APT_PACKAGES := iproute2 iputils-ping arping curl ca-certificates nftables tcpdump ndisc6 \
                frr gobgpd bird2 pdns-server pdns-backend-sqlite3 bind9-dnsutils
# The image without Docker (dev/image/build.sh): a Debian rootfs, packed as OCI, checked by
# running it in a throwaway containerd with runc.
APT_PACKAGES += mmdebstrap umoci containerd runc
# The real lab nodes (ironlb.lab.nodes): containerd and runc (above), the bridge CNI plugins.
APT_PACKAGES += containernetworking-plugins

.PHONY: help test lab lab-down lab-status check unit fuzz deps apt venv kube image peers lab-images crds bench-quick \
        compare clean

help:
	@echo "make lab     bring up a lab cluster: real nodes (kubelet, containerd, kube-proxy), ironlb"
	@echo "             by its Helm chart, a router and clients (ironlb lab up --process: the fast lab)"
	@echo "make test    install what is needed, then run every check and the whole test suite"
	@echo "make lab-down / lab-status / check (lint+types only) / unit (unit tests only)"
	@echo "make image   build ironlb's OCI image archive (no Docker needed; prints its path)"
	@echo "make fuzz    every network decoder fed 10^6 random and corrupted inputs (hours)"
	@echo "make compare ironlb side by side with MetalLB v0.15.2 and kube-vip v1.2.2, same lab"
	@echo "             (builds both; COMPARE_ARGS=--quick: the short forms, about 2 min)"

test: deps peers check lab-images
	$(BIN)/pytest tests

check: venv
	$(BIN)/ruff check src tests bench dev
	$(BIN)/ruff format --check src tests bench dev
	$(BIN)/mypy src
	$(BIN)/lint-imports
	$(BIN)/python dev/gen_crds.py --check

unit: venv
	$(BIN)/pytest tests/unit

# The decoders' fuzz tests run in `make test` with a bounded number of inputs (hypothesis 2 000,
# the mutation fuzzer 10^5 per decoder); this runs 10^6 of each per decoder (FUZZ_EXAMPLES=...).
FUZZ_EXAMPLES ?= 1000000
fuzz: venv
	IRONLB_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) IRONLB_FUZZ_MUTATIONS=$(FUZZ_EXAMPLES) \
	  $(BIN)/pytest -p no:cacheprovider -o timeout=0 tests/fuzz

lab: deps lab-images
	$(BIN)/ironlb lab up

lab-down: venv
	$(BIN)/ironlb lab down

lab-status: venv
	$(BIN)/ironlb lab status

deps: apt venv kube

# Installs only what is missing. Debian starts daemons on install (frr, pdns); a policy-rc.d keeps
# them off the host for the duration (the lab runs its own, inside namespaces).
apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing $$missing"; \
	  made_policy=; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1; \
	  fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing >/dev/null; rc=$$?; \
	  [ -z "$$made_policy" ] || rm -f /usr/sbin/policy-rc.d; \
	  exit $$rc; \
	fi

VENV_KEY := $(shell cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-12)

venv: $(VENV)/.installed-$(VENV_KEY)

$(VENV)/.installed-$(VENV_KEY):
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

kube:
	@dev/kube/build.sh >/dev/null

# Not part of deps: built when the real-node lab or test_image.py asks for it (cached by inputs).
image: apt venv
	@dev/image/build.sh

# Other projects' binaries the tests run against ironlb (dev/peers/*.peer), cached like kube's;
# only `make test` needs them (`make lab` does not wait for them).
PEERS := external-dns metallb kube-vip

peers:
	@for p in $(PEERS); do dev/peers/build.sh $$p >/dev/null; done
# The real-nodes lab imports both into its nodes: built before a lab or a test run starts, so
# that no lab or test timeout includes a cold image build.
lab-images: apt venv
	@dev/image/build.sh pause >/dev/null
	@dev/image/build.sh >/dev/null

crds: venv
	$(BIN)/python dev/gen_crds.py

BENCHES := $(filter-out bench/common.py,$(wildcard bench/*.py))

# Side by side, by the same procedure in the same lab: MetalLB (layer-2 failover, allocation,
# controller restart, memory) and kube-vip (the control-plane VIP). Not part of `make test`.
COMPARE_ARGS ?=
compare: deps peers
	$(BIN)/python bench/compare.py $(COMPARE_ARGS)
	$(BIN)/python bench/bgp.py --metallb $(if $(filter --quick,$(COMPARE_ARGS)),--quick)
	$(BIN)/python bench/cpvip_failover.py $(if $(filter --quick,$(COMPARE_ARGS)),--quick)

bench-quick: deps peers
	@for b in $(BENCHES); do echo "== $$b"; $(BIN)/python $$b --quick | tail -n 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
