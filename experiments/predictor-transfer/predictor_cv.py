"""What the predictor's model form can reach with plenty of data: 5-fold cross-validation
of a from-scratch fit (``profile.predictor.cross_validate``) on every subnet a
``transfer_campaign.py`` directory measured (pool and held-out together), per landscape.

Set against the measurement noise of ``measurement_repeatability.py``, this tells whether
a landscape's prediction error comes from the measurements (CV error near the noise) or
from the model (CV error well above it).

    python experiments/predictor-transfer/predictor_cv.py SOURCE_PREDICTOR CAMPAIGN_DIR [--landscapes cpu,...]
        [--statistic min] [--forms additive,multiplicative,physics]

``--forms``: the fits ``fit`` may choose from (``additive,multiplicative`` = the per-key
tables alone, as before the physics table existed).

``fit_on_all``: which table ``fit`` chooses on all of a landscape's subnets, and every form's
5-fold error there. ``SOURCE_PREDICTOR`` only supplies the search space. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from study import DEFAULT_LANDSCAPES, load, names

from ofa_deploy.predictor.predictor import LatencyPredictor, cross_validate, fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("campaign", type=Path)
    ap.add_argument("--landscapes", default=DEFAULT_LANDSCAPES)
    ap.add_argument("--statistic", default="min")
    ap.add_argument("--forms", default="additive,multiplicative,physics")
    args = ap.parse_args()
    space = LatencyPredictor.load(args.source).space
    forms = [f for f in args.forms.split(",") if f]
    out = {"campaign": str(args.campaign), "statistic": args.statistic, "forms": forms, "landscapes": {}}
    for land in names(args.landscapes):
        data = load(args.campaign, land, space)
        subs, lat = [], []
        for split in ("pool", "holdout"):
            s, y = data.split(split, args.statistic)
            subs += s
            lat += y
        report = cross_validate(space, subs, lat, target=land, statistic=args.statistic, forms=forms)
        out["landscapes"][land] = {k: round(v, 4) if isinstance(v, float) else v for k, v in report.items()}
        chosen = fit(space, subs, lat, target=land, statistic=args.statistic, forms=forms).info
        out["landscapes"][land]["fit_on_all"] = {
            "table_model": chosen["table_model"],
            "cv_mean_abs_rel_error": {f: round(v["cv_mean_abs_rel_error"], 4) for f, v in chosen["forms"].items()}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
