"""Results: every evaluation as a database row, ranked; and ``compare``, which trains and ranks.

- ``evalrecord``: ``EvalRecord``, one evaluation as a row, and the checks that keep a misleading row out.
- ``provenance``: the config and reference-set hashes that say which rows are comparable, the training
  run a checkpoint came from, and the environment an evaluation ran in (versions, device, git commit).
- ``database``: the SQLite results database (schema versions and migrations, atomic writes, one row per
  evaluation).
- ``record``: an evaluation turned into a row (stored at once, or kept as a pending row for the driver).
- ``leaderboard``: ranking: systems grouped, seeds summarised, paired-bootstrap intervals to the leader.
- ``naming``: a system's name on the board: what tells it from the other rows shown; its full identity.
- ``compare``: architectures trained under one budget, evaluated and recorded.
- ``job``: one run of a sweep as a job (train, evaluate into its folder; never the database).
- ``sweep``: the driver of ``zoo compare --executor``: jobs through an executor, the job ledger, reattaching,
  dependencies, the live view, ``--status``; the one writer of the database.

May import: every layer below (``zoo.training``, ``zoo.evaluation``, ``zoo.views``, ``zoo.models``, …).
The database's names (its row, hashes and environment too) are re-exported here, where ``zoo.results``
always had them.
"""

from zoo.errors import ResultsDBError
from zoo.results.database import (
    DB_ENV,
    DEFAULT_DB,
    SCHEMA_VERSION,
    ResultsDB,
    resolve_db_path,
)
from zoo.results.evalrecord import EvalRecord
from zoo.results.provenance import (
    config_hash,
    environment_info,
    full_config,
    references_hash,
)

__all__ = [
    "DB_ENV",
    "DEFAULT_DB",
    "SCHEMA_VERSION",
    "EvalRecord",
    "ResultsDB",
    "ResultsDBError",
    "config_hash",
    "environment_info",
    "full_config",
    "references_hash",
    "resolve_db_path",
]
