"""The claims desk: a server-rendered web app where billing staff see every claim and fix what
holds it (``cdc-claims run desk``).

It reads (never writes) the ledger, the claim history, the ``iclm_*`` billing rows and the
OpenMRS patient, visit and location rows through :mod:`cdc_claims.desk.store`, and acts only
through the :class:`~cdc_claims.desk.actions.DeskActions` port (re-run, resubmit, refresh,
withdrawal handled), the same audited commands the CLI runs. Pure parts, tested without a
server: :mod:`~cdc_claims.desk.words` (reasons in plain words), :mod:`~cdc_claims.desk.chart`
(the SVG bar chart), :mod:`~cdc_claims.desk.filters`, :mod:`~cdc_claims.desk.queries`,
:mod:`~cdc_claims.desk.summary`, :mod:`~cdc_claims.desk.timeline`, :mod:`~cdc_claims.desk.export`.
"""
