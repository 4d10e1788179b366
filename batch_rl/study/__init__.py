"""Studies: seeds x games x settings of train.py runs, from one TOML file.

  spec.py      the study file and its expansion into runs (run.Run)
  launch.py    which runs to start, recorded in the study directory, then an executor
  executors/   local subprocesses (local.py), SLURM (slurm.py), Ray (ray_tasks.py)
  job.py       one attempt at one run: train.py, its log and status file
  status.py    where each run stands, from the run directories' files
  run.py       the Run and the files of a run directory (shared by all of the above)

Command line: `python -m batch_rl.study plan|launch|status` (__main__.py).
"""
