# tcbuild: `make image` builds the example recipe, `make test` runs every test.
# Both create the virtual environment (.venv) and install tcbuild into it first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RECIPE ?= recipes/gameserver.toml
# MIRROR=URL fetches from that mirror instead of the recipe's list (e.g. a local one).
MIRROR ?=
TCBUILD_FLAGS := $(if $(MIRROR),--mirror $(MIRROR))

.PHONY: image fetch deps test lint venv extras clean

image: fetch  ## the main job (until the image stage lands: fetch and verify every input)

fetch: $(BIN)/tcbuild
	$(BIN)/tcbuild fetch $(RECIPE) $(TCBUILD_FLAGS)

deps: $(BIN)/tcbuild
	$(BIN)/tcbuild deps $(RECIPE) $(TCBUILD_FLAGS)

test: $(BIN)/tcbuild
	$(BIN)/ruff check tcbuild tests
	$(BIN)/mypy
	$(BIN)/pytest

venv: $(BIN)/tcbuild

$(BIN)/tcbuild: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
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
