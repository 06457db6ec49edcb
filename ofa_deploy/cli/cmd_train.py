"""``ofa-deploy train``: supernet training with any of the paper's schedules (thin layer
over ``ofa_deploy.train``). DDP: ``torchrun --nproc-per-node N -m ofa_deploy train ...``."""

from __future__ import annotations

import re

import click

from .common import MAX_COUNT, SEED, emit_json, limit_float, limit_int

METHODS = ("rss", "ps", "fixed", "max-then-min", "min-then-max", "alternating", "sandwich")
DATASETS = ("digits", "mnist", "fmnist", "cifar10", "cifar100", "folder")


def _ps_epochs(ctx, param, value):
    if value is None:
        return None
    parts = value.split(",")
    if len(parts) != 6 or not all(re.fullmatch(r"\s*[0-9]{1,7}\s*", v, re.ASCII) for v in parts):
        raise click.BadParameter("expected six comma-separated integers, e.g. 25,17,3,17,3,17")
    epochs = [int(v) for v in parts]
    if sum(epochs) < 1:
        raise click.BadParameter("expected six comma-separated integers, e.g. 25,17,3,17,3,17")
    return epochs


def _resolutions(ctx, param, value):
    if value is None:
        return None
    from ..errors import OfaError
    from ..resolution import parse_resolutions

    try:
        return list(parse_resolutions(value))
    except OfaError as exc:
        raise click.BadParameter(str(exc).replace("--resolutions: ", "", 1)) from None


@click.command("train")
@click.option("--dataset", type=click.Choice(DATASETS), default="digits", show_default=True,
              help="Training data (digits is bundled, the others come through torchvision; folder: your images "
                   "in --data-dir).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="torchvision root, or a folder of the original MNIST/F-MNIST IDX .gz files; for --dataset "
                   "folder: DIR/train/<class>/* + DIR/val/<class>/*, or DIR/<class>/* split by --val-fraction.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="--dataset folder in one tree: fraction of each class held out as the test split "
                   "(seeded, same for every run) [default: 0.2].")
@click.option("--image-size", type=click.IntRange(1, 4096), default=None,
              help="Input size N: the data are resized to NxN and the space, MACs, supernet and ONNX input follow "
                   "[default: 32, or the largest of --resolutions].")
@click.option("--width-mult", type=limit_float("width_mult"), default=1.0, show_default=True,
              help="OFA's width multiplier: every width of the space (stem, stages, head) becomes "
                   "make_divisible(width x W, 8); OFA's published supernets use 1.0 and 1.2.")
@click.option("--download", is_flag=True, help="Let torchvision download the dataset (needs internet).")
@click.option("--method", type=click.Choice(METHODS), default="rss", show_default=True,
              help="Subnet schedule: the paper's RSS and PS, its ablations, or sandwich.")
@click.option("--per-batch", type=limit_int("per_batch"), default=None,
              help="rss: K subnets per step instead of one per epoch; sandwich: random subnets per step (2).")
@click.option("--balance", type=click.Choice(["none", "flops"]), default="none", show_default=True,
              help="flops: draw a 1-MFLOP bucket uniformly, then a subnet in it.")
@click.option("--subnet", default=None, help="fixed: smallest, middle, largest or a SPEC (text, JSON, file).")
@click.option("--epochs", type=click.IntRange(1, MAX_COUNT), default=None,
              help="Total epochs (PS splits them in the paper's phase proportions). Default 5, or the preset's.")
@click.option("--ps-epochs", callback=_ps_epochs, default=None,
              help="PS phase epochs: largest,kernel,depth-1,depth-2,expand-1,expand-2.")
@click.option("--preset", type=click.Choice(["paper", "paper-short"]), default=None,
              help="The paper's Table 1 epochs for the dataset and method (paper-short: RSS-short).")
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default=None,
              help="Default cosine; constant for max-then-min, min-then-max and alternating (as the paper).")
@click.option("--lr", type=limit_float("lr", lo_open=True), default=0.01, show_default=True)
@click.option("--batch-size", type=click.IntRange(2, MAX_COUNT), default=64, show_default=True,
              help="Global batch (split over DDP ranks and --grad-accum micro-batches).")
@click.option("--grad-accum", type=click.IntRange(1, MAX_COUNT), default=1, show_default=True,
              help="Micro-batches per step (gradients summed; BatchNorm sees each micro-batch).")
@click.option("--warmup-epochs", type=click.IntRange(0, MAX_COUNT), default=None,
              help="Linear warm-up epochs (default 5 with --preset, else at most a fifth of the first phase; "
                   "0 under --fidelity released-code).")
@click.option("--kd-ratio", type=limit_float("kd_ratio"), default=1.0, show_default=True,
              help="PS distillation weight (0 turns it off).")
@click.option("--augment", type=click.Choice(["default", "ofa", "fmnist", "digits", "released", "none"]),
              default="default", show_default=True,
              help="Augmentation policy (default: chosen per dataset; released with --data-protocol released).")
@click.option("--fidelity", type=click.Choice(["ofa", "released-code"]), default=None,
              help="Preset of the six choices below: ofa (OFA's intent, today's behaviour) or released-code (what "
                   "the paper's released code does). A switch that contradicts it is an error. [default: ofa]")
@click.option("--ps-lr", type=click.Choice(["restart", "tail"]), default=None,
              help="PS learning rate: restart (fresh optimizer, full cosine per phase) or tail (released code: "
                   "cumulative phase epochs, each phase the tail of one cosine, momentum carried over, phases after "
                   "kernel one epoch shorter). [default: restart]")
@click.option("--teacher", type=click.Choice(["trained", "random", "none"]), default=None,
              help="PS distillation teacher: the trained largest network, random (released code: a fresh largest "
                   "network, no weights loaded, train-mode BN) or none. [default: trained]")
@click.option("--sort", type=click.Choice(["none", "ofa", "full"]), default=None,
              help="Channel sorting before PS's expand phases: full, ofa (keeps the e=4 prefix first before "
                   "expand-2) or none (released code). [default: full]")
@click.option("--data-protocol", type=click.Choice(["ofa-deploy", "released"]), default=None,
              help="ofa-deploy (all training images, normalised, 32x32) or released (1-channel sets: fixed 50k/10k "
                   "split, crop 8-100 % + flip + brightness, no normalisation, test at native 28x28). "
                   "[default: ofa-deploy]")
@click.option("--macs-stem", type=click.Choice(["1", "3"]), default=None,
              help="Count the stem's MACs (and so bucket edges) as if it read this many channels; 3 = the paper's "
                   "counter. [default: the data's channels]")
@click.option("--val-size", type=click.IntRange(0, MAX_COUNT), default=0, show_default=True,
              help="Hold out this many training images and report val_acc each epoch.")
@click.option("--train-subset", type=click.IntRange(1, MAX_COUNT), default=None, help="Train on N images only.")
@click.option("--test-subset", type=click.IntRange(1, MAX_COUNT), default=None,
              help="Recorded for evaluation: test on N images only.")
@click.option("--resolutions", callback=_resolutions, default=None,
              help="Elastic resolution (OFA): train each batch at one of these input sizes, e.g. 24,28,32 "
                   "(drawn per step from the seed); eval/export/catalog then take --resolution from this set "
                   "[default: the data's size only].")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Same seed, same run (bit-identical on CPU).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp", type=click.Choice(["bf16", "fp16", "fp32"]), default=None,
              help="Autocast precision [default: bf16 on a CUDA GPU that supports it, else fp32]; fp16 (loss-scaled) "
                   "needs CUDA.")
@click.option("--cuda-graphs", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Capture the training step of an epoch that trains one subnet as a CUDA graph and replay it "
                   "(auto: where possible; on: also needs CUDA and says which epochs stay eager).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Torch threads on a CPU [default: $OMP_NUM_THREADS, else 1 - on a small CPU one thread is the "
                   "fastest for these tiny batches; a resume keeps the run's own count].")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory (default runs/DATASET-METHOD-sSEED).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="Continue the run in this directory (its options are read from it; --device may change).")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
def command(dataset, data_dir, download, method, per_batch, balance, subnet, epochs, ps_epochs, preset, lr_schedule,
            lr, batch_size, grad_accum, warmup_epochs, kd_ratio, augment, val_size, train_subset, test_subset, seed,
            device, amp, out, resume_dir, quiet, as_json, resolutions=None, image_size=None, val_fraction=None,
            cuda_graphs="auto", threads=None, width_mult=1.0, **fidelity) -> None:
    """Train a supernet; the run directory gets config.toml, metrics.jsonl, histogram.json,
    last.pt / final.pt and summary.json."""
    from ..train import TrainConfig, read_summary, resume, train

    if resume_dir is not None:
        _refuse_changes_on_resume()
        explicit = click.get_current_context().get_parameter_source("device") == click.core.ParameterSource.COMMANDLINE
        graphs_given = click.get_current_context().get_parameter_source("cuda_graphs") == \
            click.core.ParameterSource.COMMANDLINE
        run_dir = resume(resume_dir, quiet=quiet, device=device if explicit else None,
                         cuda_graphs=cuda_graphs if graphs_given else None, threads=threads)
    else:
        config = TrainConfig(
            dataset=dataset, data_dir=data_dir, download=download, method=method, per_batch=per_batch,
            balance=balance, subnet=subnet, epochs=epochs, ps_epochs=ps_epochs, preset=preset, seed=seed,
            device=device, out=out, train_subset=train_subset, test_subset=test_subset, val_size=val_size,
            quiet=quiet, lr_schedule=lr_schedule, batch_size=batch_size, lr=lr, warmup_epochs=warmup_epochs,
            kd_ratio=kd_ratio, amp=amp, augment=augment, grad_accum=grad_accum, **_fidelity(fidelity),
        )
        config.resolutions = resolutions
        config.image_size, config.val_fraction = image_size, val_fraction
        config.width_mult = width_mult
        config.cuda_graphs, config.threads = cuda_graphs, threads
        run_dir = train(config)
    summary = read_summary(run_dir)
    if as_json:
        emit_json({**summary, "run_dir": str(run_dir)})
    elif not quiet:
        click.echo(f"{run_dir}: {summary['epochs']} epochs in {summary['train_wall_time_s']:.1f} s, final train "
                   f"accuracy {summary['final_train_acc']:.4f}")


def _fidelity(options: dict) -> dict:
    """The --fidelity preset and its switches as ``TrainConfig`` fields (None = not given)."""
    out = {k: options.get(k) for k in ("fidelity", "ps_lr", "teacher", "sort", "data_protocol")}
    out["macs_stem"] = None if options.get("macs_stem") is None else int(options["macs_stem"])
    return out


# What --resume may change: where it runs and how it reports, never what it trains.
_RESUME_MAY_CHANGE = {"resume_dir", "device", "quiet", "as_json", "cuda_graphs", "threads"}


def _refuse_changes_on_resume() -> None:
    ctx = click.get_current_context()
    given = [p for p in ctx.command.params if p.name not in _RESUME_MAY_CHANGE
             and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
    if given:
        flags = ", ".join(p.opts[0] for p in given)
        raise click.UsageError(f"--resume continues a run with the options in its config.toml; {flags} cannot be "
                               "changed (start a new run with --out to train differently)")
