"""Choosing subnets for a catalog (host side, torch): candidates drawn over the space, their
accuracy measured, the Pareto front against a latency proxy, the finalists exported and
measured into the catalog (``build.build_catalog``, behind ``ofa-deploy catalog build``).
"""
