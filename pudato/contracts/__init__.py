"""Dataset contracts: what a dataset's releases must look like, and how each release differs.

* :mod:`~pudato.contracts.model`: the contract (``datasets/<name>.yml``) and the load options it shares
  with a payload; :class:`~pudato.contracts.model.ColumnRead`, what the warehouse reads each column with.
* :mod:`~pudato.contracts.reading`: contracts read from the logic repository at a job's pinned commit.
* :mod:`~pudato.contracts.drift`: headers matched to columns (name, alias, similarity); the drift report
  and its policies.
* :mod:`~pudato.contracts.validation`: the validation report, its explanations and ``max_rejected``.

Nothing here runs SQL: the warehouse backend (:mod:`pudato.backends.warehouse.typed`,
:mod:`pudato.backends.warehouse.checks`) does, with these as its instructions.
"""
