"""Interviews and evaluation: question sets, interviews, the judge, deterministic checks, reports.

``charlite interview`` writes a results file (:mod:`charlite.eval.interview`); ``charlite eval``
judges it (:mod:`charlite.eval.judge`), runs the checks that need no judge
(:mod:`charlite.eval.checks`), aggregates with bootstrap intervals (:mod:`charlite.eval.stats`)
and writes a report (:mod:`charlite.eval.report`). Nothing here imports a model library at import
time.
"""
