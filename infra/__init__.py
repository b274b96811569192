"""What runs the system around the job and the trainer: local/ (stand-ins for production
services on loopback, demo data), nightly/ (the nightly retrain), demo.py (the end-to-end run),
setup/ and docker/ (system packages, the virtualenv, container images). Nothing outside infra/,
tests/ and benchmarks/ imports from here."""
