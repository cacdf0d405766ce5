# tcbuild: `make demo` runs the whole pipeline offline, `make image` builds the example recipe,
# `make test` runs every test, `make test-quick` all but the slow ones (QEMU, namespaces, root,
# fault-injection loops).
# Both create the virtual environment (.venv) and install tcbuild into it first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RECIPE ?= recipes/gameserver.toml
# MIRROR=URL fetches from that mirror instead of the recipe's list (e.g. a local one).
MIRROR ?=
TCBUILD_FLAGS := $(if $(MIRROR),--mirror $(MIRROR))

# Debian packages the tests and the benchmark use (installed by `make test`, `make demo` and
# `make bench` when run as root).
APT_PACKAGES := squashfs-tools busybox-static cpio libarchive-tools qemu-system-x86 ipxe-qemu \
	pxelinux syslinux-common isolinux xorriso advancecomp isc-dhcp-server isc-dhcp-client \
	tftpd-hpa rsyslog iproute2 util-linux bsdutils curl nfs-ganesha nfs-ganesha-vfs \
	kea-dhcp4-server dnsmasq-base ovmf syslinux-efi mtools nginx-light openipmi ipmitool \
	prometheus chromium fonts-liberation openssh-client openssh-server rsync

.PHONY: demo image fetch deps test test-quick bench bench-fleet storm tools venv mirror extras clean

# Offline, end to end: a stand-in mirror, build, publish into build/tftpboot, a QEMU PXE boot.
demo: tools $(BIN)/tcbuild
	$(BIN)/python -m tests.kit.demo

image: $(BIN)/tcbuild  ## the main job: build/<recipe>/{vmlinuz64,core.hts.gz,build.json}
	$(BIN)/tcbuild build $(RECIPE) $(TCBUILD_FLAGS)

fetch: $(BIN)/tcbuild
	$(BIN)/tcbuild fetch $(RECIPE) $(TCBUILD_FLAGS)

deps: $(BIN)/tcbuild
	$(BIN)/tcbuild deps $(RECIPE) $(TCBUILD_FLAGS)

test: tools $(BIN)/tcbuild
	$(BIN)/ruff check tcbuild tests bench
	$(BIN)/mypy
	$(BIN)/pytest

# The same lint, and the tests that boot no VM, start no namespace, need no root and inject no
# faults in a loop, on every core (pytest-xdist; under 3 minutes here).
test-quick: tools $(BIN)/tcbuild
	$(BIN)/ruff check tcbuild tests bench
	$(BIN)/mypy
	$(BIN)/pytest -n auto -m "not qemu and not netns and not root and not slow"

venv: $(BIN)/tcbuild

# Speed, memory and size against Tiny Core's own remaster (as root; see bench/bench.py).
bench: tools $(BIN)/tcbuild
	$(BIN)/python bench/bench.py

# The operator's commands from 10 to 10,000 hosts (server-config and the daemons' checks, publish,
# verify, rollback, fleet over 30 days of logs; Kea under perfdhcp in namespaces as root); prints
# the table, writes build/bench/fleet.md and docs/fleet-scale.svg (see bench/fleet.py).
# SIZES=10,100 for a quick run.
SIZES ?= 10,100,1000,10000
bench-fleet: tools $(BIN)/tcbuild
	$(BIN)/python bench/fleet.py --sizes $(SIZES)

# The boot storm: 1, 10, 50 clients fetching kernel + initrd from in.tftpd and from nginx at once,
# in network namespaces (as root; see bench/storm.py); redraws docs/boot-storm.svg.
storm: tools $(BIN)/tcbuild
	$(BIN)/pip install -q -e .[bench]
	$(BIN)/python bench/storm.py

tools:
	@missing=$$(for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "the tests need: sudo apt-get install $$missing" >&2; exit 1; fi; \
	fi

# A stand-in mirror (test data laid out like the real one) on http://127.0.0.1:8000/, to try
# `make image MIRROR=http://127.0.0.1:8000/` without the internet.
mirror: tools $(BIN)/tcbuild
	$(BIN)/python -m tests.kit.mirrortree build/mirror 8000

$(BIN)/tcbuild: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The example's stand-in nrpe extension, packed the way Tiny Core packs extensions.
extras: recipes/extras/nrpe.tcz
recipes/extras/nrpe.tcz: $(shell find recipes/extras/nrpe -type f 2>/dev/null)
	mksquashfs recipes/extras/nrpe $@ -b 4k -comp gzip -no-xattrs -noappend -quiet \
		-all-root -all-time 0 -mkfs-time 0 -processors 1
	cd $(@D) && md5sum $(@F) > $(@F).md5.txt

clean:
	rm -rf build $(VENV)
