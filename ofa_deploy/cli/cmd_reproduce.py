"""``ofa-deploy reproduce``: the paper's PS vs RSS vs RSS-short comparison in one command
(thin layer over ``ofa_deploy.reproduce``)."""

from __future__ import annotations

import sys

import click

from .cmd_eval import parse_buckets
from .common import MAX_COUNT, SEED, emit_json, limit_float

DATASETS = ("digits", "mnist", "fmnist", "cifar10", "cifar100")
# ofa_deploy.train.fidelity's names, spelled out: importing it here would import torch
# (tests/test_reproduce_seeds.py keeps the two in sync)
FIDELITY_PRESETS = ("ofa", "released-code")
PS_LR = ("restart", "tail")
TEACHERS = ("trained", "random", "none")
SORTS = ("none", "ofa", "full")
DATA_PROTOCOLS = ("ofa-deploy", "released")


@click.command("reproduce")
@click.option("--dataset", type=click.Choice(DATASETS), default="fmnist", show_default=True)
@click.option("--scale", type=limit_float("scale", lo_open=True), default=1.0, show_default=True,
              help="Multiply Table 1's epochs (each PS phase keeps at least one epoch); 0.1 for a quick version.")
@click.option("--ablations", is_flag=True, help="Also the runs of the paper's Figs. 5, 6 and 7 (8 more runs).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="torchvision root, or a folder of the original MNIST/F-MNIST IDX .gz files.")
@click.option("--download", is_flag=True, help="Let torchvision download the dataset.")
@click.option("--train-subset", type=click.IntRange(1, MAX_COUNT), default=None, help="Train on N images only.")
@click.option("--test-subset", type=click.IntRange(1, MAX_COUNT), default=None, help="Evaluate on N test images only.")
@click.option("--per-bucket", type=click.IntRange(1, MAX_COUNT), default=100, show_default=True,
              help="Subnets per MFLOPs bucket (the same ones for every run).")
@click.option("--buckets", default="4,6,8,10,12,14", show_default=True, callback=parse_buckets)
@click.option("--tolerance", type=limit_float("tolerance"), default=0.5, show_default=True)
@click.option("--calib-n", type=click.IntRange(1, MAX_COUNT), default=2000, show_default=True,
              help="Training images for each subnet's BN recalibration.")
@click.option("--seed", type=SEED, default=None, help="One training and evaluation seed [default: 0].")
@click.option("--seeds", default=None, metavar="LIST",
              help="Train every method once per seed (e.g. 0,1,2) and report per-bucket means with 95% bootstrap "
                   "intervals; the first seed draws the evaluated subnets, the same for every run.")
@click.option("--fidelity", type=click.Choice(FIDELITY_PRESETS), default=None,
              help="Training choices of every run: ofa (ofa-deploy's, OFA's intent) or released-code (what the "
                   "paper's code does); docs/fidelity.md lists them [default: ofa].")
@click.option("--ps-lr", type=click.Choice(PS_LR), default=None, help="PS phases: restart a cosine or run its tail.")
@click.option("--teacher", type=click.Choice(TEACHERS), default=None, help="PS distillation teacher.")
@click.option("--sort", type=click.Choice(SORTS), default=None, help="Channel sorting before PS's expand phases.")
@click.option("--warmup-epochs", type=click.IntRange(0, MAX_COUNT), default=None, help="Learning-rate warm-up epochs.")
@click.option("--data-protocol", type=click.Choice(DATA_PROTOCOLS), default=None,
              help="Data split, augmentation, normalisation and test size.")
@click.option("--macs-stem", type=click.IntRange(1, 3), default=None,
              help="Input channels the stem's MACs are counted with (3: the paper's counter).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default reproduce/DATASET-xSCALE). Run again to resume.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def command(dataset, scale, ablations, data_dir, download, train_subset, test_subset, per_bucket, buckets,
            tolerance, calib_n, seed, seeds, fidelity, ps_lr, teacher, sort, warmup_epochs, data_protocol, macs_stem,
            device, out, quiet, as_json) -> None:
    """Train OFA-PS, RSS and RSS-short with Table 1's epochs x --scale (once per seed of --seeds),
    evaluate them on the same subnets and write the report with a verdict (per bucket: RSS - PS
    with a bootstrap interval, spread, time ratios vs the paper's 1.9x and 6.1x). Interrupted?
    Run the same command again: it continues."""
    from ..reproduce import ReproduceOptions, reproduce
    from ..reproduce_seeds import combine_seed_options

    options = ReproduceOptions(
        dataset=dataset,
        scale=scale,
        seeds=combine_seed_options(seed, seeds),
        data_dir=data_dir,
        download=download,
        train_subset=train_subset,
        test_subset=test_subset,
        per_bucket=per_bucket,
        buckets=tuple(buckets),
        tolerance=tolerance,
        calib_n=calib_n,
        ablations=ablations,
        fidelity=fidelity,
        switches=(
            ("ps_lr", ps_lr),
            ("teacher", teacher),
            ("sort", sort),
            ("warmup_epochs", warmup_epochs),
            ("data_protocol", data_protocol),
            ("macs_stem", macs_stem),
        ),
    )
    out = out or f"reproduce/{dataset}-x{scale:g}"
    verdict = reproduce(options, out, device=device, progress=not quiet, command=["ofa-deploy", *sys.argv[1:]])
    if as_json:
        emit_json(verdict)
        return
    c = verdict["summary"]["rss_vs_ps"]
    click.echo(f"RSS > PS (95% bootstrap interval over {len(verdict['seeds'])} seed(s) and the subnets): holds in "
               f"{c['holds']}, fails in {c['fails']}, inside the noise in {c['inside the noise']} of "
               f"{verdict['n_buckets']} buckets; report: {out}/report/report.md")
