"""Latency predictors: fitting a per-target latency model to measured subnets, adapting one
to a new target from a few measurements, and checking either on held-out subnets. No torch
needed to fit, load or predict (numpy; scikit-learn and scipy where fitting and scoring);
measuring for ``predictor build|check|adapt`` exports subnets with torch, imported lazily.

* ``features``: the subnet's per-block lookup-table keys and size features;
  ``latency_model``: the fitted table + correction; ``uncertainty``: prediction intervals;
  ``predictor``: ``LatencyPredictor`` (fit, cross-validate, save/load, accuracy report).
* ``transfer``: adapting a source predictor (Bayesian prior, active selection);
  ``learning_curve``: accuracy against the number of measured subnets; ``repeats``: the
  held-out truth measured K times and the ceiling it sets.
* ``directory``: the predictor directory's files and what filling one needs;
  ``build``: ``predictor build`` and ``predictor check``; ``adapt``: ``predictor adapt``
  and ``check --curve``.

Measuring is ``ofa_deploy.profile`` (``profile.collect`` runs the campaigns); this package
imports it, never the other way.
"""
