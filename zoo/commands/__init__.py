"""Sub-commands of ``zoo``. Every module here is loaded as an internal plugin implementing
``zoo_add_commands(subparsers)``; adding a command means adding a module, nothing else."""
