"""The nightly retrain (`python -m infra.nightly`, see __main__.py): config.py (the YAML),
lock.py (one run at a time), night.py (the steps), launch.py (horovodrun or an MPIJob),
evaluate.py (both models through their serving signature), promote.py (the pointer)."""
