"""Sweeps: whole benchmark tables in one command (``python scripts/sweep.py``).

* :mod:`sweep.spec`     what to run (flags or a YAML sweep file);
* :mod:`sweep.jobs`     the jobs: the train.py commands and output folders of ``scripts/*.sh``;
* :mod:`sweep.state`    the sweep's files on disk and what is finished, running or inconsistent;
* :mod:`sweep.runner`   one job, wherever it runs (checkpointable for submitit);
* :mod:`sweep.backends` local workers, submitit's LocalExecutor, Slurm through submitit;
* :mod:`sweep.engine`   the driver: dependencies, progress, status, report;
* :mod:`sweep.tables`   the papers' tables of any output tree, and the comparison of trees;
* :mod:`sweep.cli`      the command line.
"""
