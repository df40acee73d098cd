"""Built-in executors: ``local`` (processes on this machine) and ``slurm`` (jobs through submitit)."""
