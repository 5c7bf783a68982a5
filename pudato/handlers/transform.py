"""The transform handler (dbt on the analysts' logic repository).

Its queue, ``pudato-transform``, and task exist now so that infrastructure and
routing are complete; its actions (build, run, test, seed, compile, deps) are
the subject of the transform issue. Until then every action is refused as
unknown, with a clear error in the step's Result.
"""

from __future__ import annotations

from pudato.handlers.base import Handler


class TransformHandler(Handler):
    name = "transform"
