"""The rendering layer: every page and picture the kit draws, from what a run recorded.

- :mod:`~recsys_audit.render.components` — escaped, static HTML pieces: badges, tables, evidence, finding cards;
- :mod:`~recsys_audit.render.plots` — charts from recorded finding evidence (matplotlib's object API, Agg canvas);
- :mod:`~recsys_audit.render.report` — the self-contained audit report of a run directory;
- :mod:`~recsys_audit.render.signoff` and :mod:`~recsys_audit.render.diff` — its sign-off and "since last audit"
  blocks;
- :mod:`~recsys_audit.render.archive` — the archive's index page with a trend per environment;
- :mod:`~recsys_audit.render.notebook` — what a section notebook shows (header, findings, summary).

Imports go one way: this package reads the domain (findings, judgement, the sign-off record, diff, archive entries)
and nothing in the domain imports it. Only the steps that write outputs — the runner, signing, ``archive`` — call in.
Rendering decides nothing: statuses, verdicts and scores are those :mod:`recsys_audit.judgement` recorded.
"""
