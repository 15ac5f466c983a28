"""Sweeps: many train.py runs (entry points x flags x seeds) on Ray, from one machine to a cluster.

    python -m common.sweep run SWEEP.toml      run what is not done yet (local Ray by default)
    python -m common.sweep status SWEEP.toml   the state of every run
    python -m common.sweep table SWEEP.toml    one row per configuration over its seeds

Modules: ``sweepfile`` (the TOML file, checked before anything starts), ``runstatus``
(a run's state from its folder), ``task`` (one run: train.py in a subprocess, resumed
when it dies), ``ray_runner`` (the tasks on Ray), ``progress`` (the display), ``table``
(the results), ``cli`` (the commands).
"""
