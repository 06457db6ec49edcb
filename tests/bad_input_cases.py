"""The bad-input campaign's table: every case is a command line a user could type (paths as
``{run}``, ``{exp}``, ``{prof}``, ``{cat}``, ``{toml}``, ``{bad}`` placeholders), an optional
setup that writes the hostile file into the case's own ``{bad}`` folder, and what the one
error line must name (the flag, file or key at fault).

``tests/test_bad_input.py`` runs them; the good artefacts they point at are built once per
session there. Kept apart so the table reads as a list of what a user may try.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

GOOD_SPEC = "33-33_33-33_33-33_33-33_33-33"
DEEP = "[" * 100_000 + "]" * 100_000  # RecursionError bait
NAN_INF = ("nan", "inf", "-inf", "1e308", "-1", "abc", "")


@dataclass
class Case:
    id: str
    argv: list
    names: tuple  # substrings the one error line must contain (any one of them, case-insensitive)
    setup: Optional[Callable[[Path, dict], None]] = None
    subprocess: bool = False
    owns: tuple = field(default_factory=tuple)  # paths (relative to the root) the command may create


def write(name: str, text: str) -> Callable[[Path, dict], None]:
    def setup(bad: Path, good: dict) -> None:
        (bad / name).parent.mkdir(parents=True, exist_ok=True)
        (bad / name).write_text(text)
    return setup


def mkdir(name: str) -> Callable[[Path, dict], None]:
    def setup(bad: Path, good: dict) -> None:
        (bad / name).mkdir(parents=True, exist_ok=True)
    return setup


# -- numbers ------------------------------------------------------------------------------
FLOAT_OPTIONS = [  # (command prefix, option, extra args that make the rest valid)
    (["subnet", "sample"], "--mflops", []),
    (["subnet", "sample"], "--tolerance", ["--mflops", "8"]),
    (["train", "--out", "{bad}/r", "--quiet"], "--lr", []),
    (["train", "--out", "{bad}/r", "--quiet"], "--kd-ratio", []),
    (["reproduce", "--out", "{bad}/rep", "--quiet"], "--scale", []),
    (["reproduce", "--out", "{bad}/rep", "--quiet"], "--tolerance", []),
    (["eval", "{run}", "--quiet"], "--tolerance", []),
    (["export", "{run}", "--out", "{bad}/e"], "--mflops", []),
    (["export", "{run}", "--out", "{bad}/e", "--mflops", "8"], "--tolerance", []),
    (["export", "{run}", "--out", "{bad}/e", "--smallest", "--precision", "int8"], "--max-drop", []),
    (["catalog", "build", "{run}", "--target", "cpu", "--catalog", "{bad}/c.db", "--precision", "int8"],
     "--max-drop", []),
    (["catalog", "select", "--catalog", "{cat}", "--target", "cpu", "--max-mflops", "9"], "--max-drop", []),
    (["profile", "{exp}"], "--warmup-s", []),
    (["profile", "{exp}"], "--min-time-s", []),
    (["profile", "{exp}"], "--cov-threshold", []),
    (["analyze", "interference", "{run}"], "--lr", []),
    (["catalog", "build", "{run}", "--target", "cpu", "--catalog", "{bad}/c.db"], "--warmup-s", []),
    (["catalog", "build", "{run}", "--target", "cpu", "--catalog", "{bad}/c.db"], "--min-time-s", []),
    (["catalog", "build", "{run}", "--target", "cpu", "--catalog", "{bad}/c.db"], "--budget-ms", []),
    (["catalog", "select", "--catalog", "{cat}", "--target", "cpu"], "--max-latency-ms", []),
    (["catalog", "select", "--catalog", "{cat}", "--target", "cpu"], "--max-mflops", []),
    (["catalog", "select", "--catalog", "{cat}", "--target", "cpu", "--max-mflops", "9"], "--min-accuracy", []),
    (["predictor", "build", "--target", "cpu", "--run", "{run}", "--out", "{bad}/p"], "--warmup-s", []),
    (["predictor", "build", "--target", "cpu", "--run", "{run}", "--out", "{bad}/p"], "--min-time-s", []),
]


def number_cases() -> list[Case]:
    cases = []
    for prefix, option, extra in FLOAT_OPTIONS:
        for value in NAN_INF:
            if value == "-1" and option in ("--mflops",):
                value = "0"
            cases.append(Case(f"{prefix[0]}-{prefix[1] if len(prefix) > 1 and not prefix[1].startswith('{') else ''}"
                              f"{option}={value or 'empty'}", [*prefix, *extra, option, value], (option,)))
    for cmd in (["eval", "{run}", "--quiet"], ["reproduce", "--out", "{bad}/rep", "--quiet"]):
        for value in ("nan", "inf", "4,nan", "4,-6", "abc", ",", "1e400"):
            cases.append(Case(f"{cmd[0]}-buckets={value}", [*cmd, "--buckets", value], ("--buckets",)))
    seed_cmds = [
        ["subnet", "sample"], ["train", "--out", "{bad}/r", "--quiet"], ["eval", "{run}", "--quiet"],
        ["export", "{run}", "--smallest", "--out", "{bad}/e"], ["analyze", "interference", "{run}"],
        ["catalog", "build", "{run}", "--target", "cpu", "--catalog", "{bad}/c.db"],
        ["predictor", "build", "--target", "cpu", "--run", "{run}", "--out", "{bad}/p"],
        ["predictor", "check", "--predictor", "{bad}/p", "--run", "{run}"],
        ["reproduce", "--out", "{bad}/rep", "--quiet"], ["quickstart", "--out", "{bad}/q", "--quiet"],
    ]
    for cmd in seed_cmds:
        for value in (str(2**64), "-1", "1.5", "abc", str(10**40)):
            cases.append(Case(f"{cmd[0]}-{cmd[1] if not cmd[1].startswith('{') else ''}-seed={value[:8]}",
                              [*cmd, "--seed", value], ("--seed",)))
    cases.append(Case("predictor-holdout-seed-2^64", ["predictor", "build", "--target", "cpu", "--run", "{run}",
                                                       "--holdout-seed", str(2**64)], ("--holdout-seed",)))
    counts = [
        (["profile", "{exp}"], "--threads", ("100000", "-1", "1e3")),
        (["profile", "{exp}"], "--min-iterations", ("100000000000", "1e11", "1", "0")),
        (["profile", "{exp}"], "--max-retries", ("1000", "-1")),
        (["profile", "{exp}"], "--batch", ("0", "1000000000")),
        (["train", "--out", "{bad}/r", "--quiet"], "--per-batch", ("100000", "-1")),
        (["train", "--out", "{bad}/r", "--quiet"], "--epochs", ("0", str(10**12))),
        (["train", "--out", "{bad}/r", "--quiet"], "--batch-size", ("1", "0")),
        (["train", "--out", "{bad}/r", "--quiet"], "--ps-epochs", ("1,2,3", "a,b,c,d,e,f", "0,0,0,0,0,0",
                                                               "١,1,1,1,1,1", "99999999,1,1,1,1,1")),
        (["subnet", "sample"], "--n", ("0", str(10**9))),
        (["eval", "{run}", "--quiet"], "--per-bucket", ("0", str(10**9))),
        (["catalog", "build", "{run}", "--target", "cpu", "--catalog", "{bad}/c.db"], "--n", ("1", str(10**9))),
        (["catalog", "build", "{run}", "--target", "cpu", "--catalog", "{bad}/c.db"], "--min-iterations", ("1e11",)),
        (["catalog", "list", "--catalog", "{cat}", "--target", "cpu"], "--batch", ("0", "-3")),
        (["space"], "--in-channels", ("0", str(10**6))),
        (["space"], "--num-classes", ("1", str(10**9))),
    ]
    for prefix, option, values in counts:
        for value in values:
            cases.append(Case(f"{prefix[0]}{option}={value[:12]}", [*prefix, option, value], (option,)))
    return cases


# -- subnet specs -------------------------------------------------------------------------
SPEC_CASES = [  # (id, spec, setup, names)
    ("long-digits", "3" * 300, None, ("malformed", "subnet text")),
    ("long-stages", "_".join(["33-33"] * 60), None, ("stages",)),
    ("long-letters", "a" * 300, None, ("malformed",)),
    ("long-path", "/".join(["d" * 300] * 2) + ".json", None, ("subnet",)),
    ("arabic-digits", GOOD_SPEC.replace("3", "٣", 2), None, ("malformed",)),
    ("fullwidth-digits", GOOD_SPEC.replace("3", "３", 2), None, ("malformed",)),
    ("superscript", GOOD_SPEC.replace("3", "³", 1), None, ("malformed",)),
    ("deep-json", "{" + '"ks":' + DEEP + "}", None, ("subnet json", "nested", "characters long")),
    ("deep-json-small", '{"ks":' + "[" * 500 + "]" * 500 + "}", None, ("nested",)),
    ("json-nan", '{"ks": [NaN], "e": [3], "d": [2]}', None, ("ks[0]=nan",)),
    ("json-strings", json.dumps({"ks": ["3"] * 20, "e": [3] * 20, "d": [2] * 5}), None, ("ks[0]",)),
    ("json-bool", json.dumps({"ks": [True] * 20, "e": [3] * 20, "d": [2] * 5}), None, ("ks[0]",)),
    ("json-huge-int", json.dumps({"ks": [10**400] * 20, "e": [3] * 20, "d": [2] * 5}), None, ("ks[0]",)),
    ("json-list", "[3, 3]", None, ("malformed",)),
    ("json-not-object", '{"ks": 3}', None, ("subnet is missing",)),
    ("json-extra-key", json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "x": 1}), None, ("unknown keys",)),
    ("json-broken", '{"ks": [3,', None, ("not valid json",)),
    ("empty", "", None, ("malformed",)),
    ("spaces", "   ", None, ("malformed",)),
    ("wrong-kernel", GOOD_SPEC.replace("33", "43", 1), None, ("ks[0]=4",)),
    ("wrong-depth", "33_33-33_33-33_33-33_33-33", None, ("stage 1 of 5",)),  # counted from 1 (issue 30)
    ("four-stages", "33-33_33-33_33-33_33-33", None, ("stages",)),
    ("dir-named-json", "{bad}/d.json", mkdir("d.json"), ("is a directory",)),
    ("missing-json", "{bad}/missing.json", None, ("does not exist",)),
    ("file-deep", "{bad}/deep.json", write("deep.json", DEEP), ("nested",)),
    ("file-not-json", "{bad}/x.json", write("x.json", "not json"), ("not valid json",)),
    (
        "file-binary",
        "{bad}/b.json",
        lambda bad, good: (bad / "b.json").write_bytes(b"\xff\xfe\x00"),
        ("not valid json",),
    ),
    ("file-wrong-subnet", "{bad}/w.json", write("w.json", json.dumps({"subnet": "abc"})), ("must be an object",)),
    ("file-list", "{bad}/l.json", write("l.json", "[1, 2]"), ("must be an object",)),
    ("file-under-file", "{prof}/x.json", None, ("does not exist", "not a directory")),
    ("nul", "33\x0033", None, ("malformed",)),
]

SPEC_COMMANDS = [
    ("subnet-show", ["subnet", "show", "{spec}"]),
    ("export", ["export", "{run}", "--subnet", "{spec}", "--out", "{bad}/e"]),
    ("train-fixed", ["train", "--method", "fixed", "--subnet", "{spec}", "--out", "{bad}/r", "--quiet"]),
]


def spec_cases() -> list[Case]:
    cases = []
    for cid, cmd in SPEC_COMMANDS:
        for sid, spec, setup, names in SPEC_CASES:
            if "\x00" in spec and cid != "subnet-show":
                continue
            cases.append(Case(f"{cid}-{sid}", [a.replace("{spec}", spec) if a == "{spec}" else a for a in cmd],
                              names, setup))
    return cases


# -- run directories, config.toml, summary.json, eval JSON -------------------------------
GOOD_CONFIG_MARK = "@good-config@"


def config_with(edit: Callable[[str], str]) -> Callable[[Path, dict], None]:
    """A copy of the good run's config.toml (and final.pt link-free copy not needed: the
    config is read first) edited by ``edit``, as ``{bad}/run``."""
    def setup(bad: Path, good: dict) -> None:
        run = bad / "run"
        run.mkdir(parents=True)
        text = (good["run"] / "config.toml").read_text()
        (run / "config.toml").write_text(edit(text))
    return setup


def replace_line(prefix: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        lines = text.split("\n")
        hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
        assert hits, prefix
        lines[hits[0]] = new
        return "\n".join(lines)
    return edit


RUN_SETUPS = [  # (id, run path, setup, names)
    ("missing", "{bad}/nope", None, ("does not exist",)),
    ("is-file", "{prof}", None, ("is a file", "not a run")),
    ("empty-dir", "{bad}/empty", mkdir("empty"), ("not a run directory",)),
    ("config-dir", "{bad}/run", lambda bad, good: (bad / "run" / "config.toml").mkdir(parents=True),
     ("not a run directory", "config.toml")),
    ("config-garbage", "{bad}/run", lambda bad, good: write("run/config.toml", "[[[ nope")(bad, good),
     ("not valid toml",)),
    ("config-binary", "{bad}/run", lambda bad, good: ((bad / "run").mkdir(), (bad / "run" / "config.toml")
                                                      .write_bytes(b"\xff\xfe[run]")), ("toml",)),
    ("config-no-space", "{bad}/run", write("run/config.toml", "[run]\nname = 'x'\n"), ("space",)),
    ("space-abc", "{bad}/run", write("run/config.toml", "space = 'abc'\n"), ("space",)),
    ("space-channels-str", "{bad}/run", config_with(replace_line("in_channels", "in_channels = 'one'")),
     ("in_channels",)),
    ("space-channels-huge", "{bad}/run", config_with(replace_line("in_channels", "in_channels = 99999999999")),
     ("in_channels",)),
    ("space-dropout-nan", "{bad}/run", config_with(replace_line("dropout", "dropout = nan")), ("dropout",)),
    ("space-kernels-str", "{bad}/run", config_with(lambda t: re.sub(r"kernel_choices = \[[^\]]*\]",
                                                                    "kernel_choices = 'x'", t)),
     ("kernel_choices",)),
    ("space-stages-bad", "{bad}/run", config_with(replace_line("stages", "stages = [1, 2]")), ("stages",)),
    ("space-unknown-key", "{bad}/run", config_with(replace_line("dropout", "dropout = 0.1\nwhat = 1")),
     ("unknown",)),
    ("run-seed-str", "{bad}/run", config_with(replace_line("seed", "seed = 'zero'")), ("run.seed",)),
    ("run-seed-huge", "{bad}/run", config_with(replace_line("seed", f"seed = {2**64}")), ("run.seed",)),
    ("data-not-table", "{bad}/run", config_with(lambda t: "data = 3\n" + t.replace("[data]", "[data2]")),
     ("data",)),
    ("train-lr-str", "{bad}/run", config_with(lambda t: t.replace("[train]", "[train]\nlr = 'fast'")),
     ("train.lr",)),
    ("train-lr-nan", "{bad}/run", config_with(lambda t: t.replace("[train]", "[train]\nlr = nan")),
     ("train.lr",)),
    ("train-epochs-neg", "{bad}/run", config_with(replace_line("epochs", "epochs = -1")), ("train.epochs",)),
    ("dataset-int", "{bad}/run", config_with(replace_line("dataset", "dataset = 7")), ("data.dataset",)),
    ("long-name", "{bad}/" + "r" * 300, None, ("name of 300", "characters")),
]


def run_cases() -> list[Case]:
    cmds = [
        ("eval", ["eval", "{RUN}", "--quiet"]),
        ("export", ["export", "{RUN}", "--smallest", "--out", "{bad}/e"]),
        ("report", ["report", "{RUN}", "--out", "{bad}/rep", "--allow-missing-eval"]),
        ("bias", ["analyze", "bias", "{RUN}"]),
        ("interference", ["analyze", "interference", "{RUN}"]),
        ("catalog-build", ["catalog", "build", "{RUN}", "--target", "cpu", "--catalog", "{bad}/c.db"]),
        ("resume", ["train", "--resume", "{RUN}", "--quiet"]),
    ]
    cases = []
    for cid, cmd in cmds:
        for rid, path, setup, names in RUN_SETUPS:
            if cid == "resume" and rid == "is-file":
                names = ("--resume", "not a directory", "is a file")
            argv = [path if a == "{RUN}" else a for a in cmd]
            cases.append(Case(f"{cid}-run-{rid}", argv, names, setup))
    return cases


def summary_and_eval_cases() -> list[Case]:
    """A run whose summary.json or eval JSON is wrong: read by report, analyze bias, train --resume."""
    def run_copy_with(name: str, text: str) -> Callable[[Path, dict], None]:
        def setup(bad: Path, good: dict) -> None:
            run = bad / "run"
            run.mkdir()
            (run / "config.toml").write_text((good["run"] / "config.toml").read_text())
            (run / name).parent.mkdir(parents=True, exist_ok=True)
            (run / name).write_text(text)
        return setup

    good_eval = {"name": "e", "split": "test", "params": {"subnet": None}, "subnets": [
        {"bucket": 4.0, "mflops": 4.1, "accuracy": 0.5, "text": GOOD_SPEC}], "buckets": [
        {"mflops": 4.0, "n": 1, "mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5}]}

    def bad_eval(path: str, value) -> str:
        data = json.loads(json.dumps(good_eval))
        target = data
        keys = path.split(".")
        for k in keys[:-1]:
            target = target[int(k)] if k.isdigit() else target[k]
        target[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value
        return json.dumps(data)

    summaries = [
        ("wall-str", json.dumps({"epochs": 1, "train_wall_time_s": "fast"}), ("train_wall_time_s",)),
        ("wall-neg", json.dumps({"epochs": 1, "train_wall_time_s": -3}), ("train_wall_time_s",)),
        ("list", "[1, 2, 3]", ("must be an object",)),
        ("deep", DEEP, ("nested",)),
        ("not-json", "{", ("not valid json",)),
        ("nan", '{"epochs": 1, "train_wall_time_s": NaN}', ("train_wall_time_s",)),
        ("acc-str", json.dumps({"epochs": 1, "train_wall_time_s": 1.0, "final_train_acc": "high"}),
         ("final_train_acc",)),
    ]
    evals = [
        ("acc-str", bad_eval("subnets.0.accuracy", "x"), ("subnets[0].accuracy",)),
        ("acc-big", bad_eval("subnets.0.accuracy", 7), ("subnets[0].accuracy",)),
        ("mflops-neg", bad_eval("subnets.0.mflops", -1), ("subnets[0].mflops",)),
        ("buckets-str", bad_eval("buckets", "all"), ("buckets",)),
        ("bucket-n-str", bad_eval("buckets.0.n", "one"), ("buckets[0].n",)),
        ("bucket-mean-str", bad_eval("buckets.0.mean", "x"), ("buckets[0].mean",)),
        ("subnets-dict", bad_eval("subnets", {"a": 1}), ("subnets",)),
        ("subnet-item-int", bad_eval("subnets.0", 3), ("subnets",)),
        ("deep", DEEP, ("nested", "evaluation")),
    ]
    cases = []
    for sid, text, names in summaries:
        cases.append(Case(f"report-summary-{sid}", ["report", "{bad}/run", "--out", "{bad}/rep",
                                                    "--allow-missing-eval"], names,
                          run_copy_with("summary.json", text)))
    for eid, text, names in evals:
        cases.append(Case(f"report-eval-{eid}", ["report", "{bad}/run", "--out", "{bad}/rep", "--eval", "e"], names,
                          run_copy_with("eval/e.json", text)))
        cases.append(Case(f"bias-eval-{eid}", ["analyze", "bias", "{bad}/run", "--eval", "e"], names,
                          run_copy_with("eval/e.json", text)))
    return cases


# -- target profiles ------------------------------------------------------------------------
TOML_BASE = 'backend = "onnxruntime"\nprecision = "fp32"\n'
TOML_CASES = [  # (id, text, names)
    ("warmup-inf", TOML_BASE + "[measure]\nwarmup_s = inf\n", ("measure.warmup_s",)),
    ("warmup-nan", TOML_BASE + "[measure]\nwarmup_s = nan\n", ("measure.warmup_s",)),
    ("min-time-inf", TOML_BASE + "[measure]\nmin_time_s = inf\n", ("measure.min_time_s",)),
    ("min-time-1e308", TOML_BASE + "[measure]\nmin_time_s = 1e308\n", ("measure.min_time_s",)),
    ("min-time-nan", TOML_BASE + "[measure]\nmin_time_s = nan\n", ("measure.min_time_s",)),
    ("min-iter-1e11", TOML_BASE + "[measure]\nmin_iterations = 1e11\n", ("measure.min_iterations",)),
    ("min-iter-int-huge", TOML_BASE + "[measure]\nmin_iterations = 100000000000\n", ("measure.min_iterations",)),
    ("min-iter-1", TOML_BASE + "[measure]\nmin_iterations = 1\n", ("measure.min_iterations",)),
    ("cov-zero", TOML_BASE + "[measure]\ncov_threshold = 0.0\n", ("measure.cov_threshold",)),
    ("cov-nan", TOML_BASE + "[measure]\ncov_threshold = nan\n", ("measure.cov_threshold",)),
    ("retries-huge", TOML_BASE + "[measure]\nmax_retries = 1000000\n", ("measure.max_retries",)),
    ("threads-huge", TOML_BASE + "threads = 100000\n", ("threads",)),
    ("threads-neg", TOML_BASE + "threads = -2\n", ("threads",)),
    ("threads-str", TOML_BASE + "threads = 'many'\n", ("threads",)),
    ("batch-zero", TOML_BASE + "batch_sizes = [0]\n", ("batch_sizes",)),
    ("batch-huge", TOML_BASE + "batch_sizes = [100000000]\n", ("batch_sizes",)),
    ("batch-str", TOML_BASE + "batch_sizes = 'one'\n", ("batch_sizes",)),
    ("unknown-key", TOML_BASE + "speed = 'fast'\n", ("speed",)),
    ("unknown-section-key", TOML_BASE + "[measure]\nfoo = 1\n", ("measure.foo",)),
    ("measure-not-table", TOML_BASE + "measure = 3\n", ("[measure]",)),
    ("no-backend", 'precision = "fp32"\n', ("backend",)),
    ("bad-backend", 'backend = "magic"\nprecision = "fp32"\n', ("backend",)),
    ("opset", TOML_BASE + "[export]\nopset = 99\n", ("export.opset",)),
    ("not-toml", "[[[", ("not valid toml",)),
    ("empty", "", ("backend",)),
    ("deep", "a = " + "[" * 5000 + "]" * 5000 + "\n", ("nested", "toml", "unknown key")),
    ("dla", TOML_BASE + "dla_core = 99\n", ("dla_core",)),
    ("workspace", 'backend = "tensorrt"\nprecision = "fp16"\n[tensorrt]\nworkspace_mb = 0\n',
     ("tensorrt.workspace_mb",)),
]


def toml_cases() -> list[Case]:
    cmds = [
        ("targets", ["targets", "{t}"]),
        ("profile", ["profile", "{exp}", "--target", "{t}"]),
        ("export", ["export", "{run}", "--smallest", "--target", "{t}", "--out", "{bad}/e"]),
    ]
    cases = []
    for cid, cmd in cmds:
        for tid, text, names in TOML_CASES:
            cases.append(Case(f"{cid}-toml-{tid}", [("{bad}/my.toml" if a == "{t}" else a) for a in cmd],
                              names, write("my.toml", text)))
        for tid, target, setup, names in [
            ("missing", "{bad}/none.toml", None, ("does not exist",)),
            ("dir", "{bad}/d.toml", mkdir("d.toml"), ("is a directory",)),
            ("unknown-name", "nosuchdevice", None, ("unknown target",)),
            ("long-name", "x" * 300, None, ("unknown target",)),
            ("long-path", "{bad}/" + "x" * 300 + ".toml", None, ("name of 305",)),
        ]:
            cases.append(Case(f"{cid}-target-{tid}", [(target if a == "{t}" else a) for a in cmd], names, setup))
    return cases


# -- models for profile -----------------------------------------------------------------------
def export_copy(edit: Callable[[Path], None]) -> Callable[[Path, dict], None]:
    def setup(bad: Path, good: dict) -> None:
        import shutil

        shutil.copytree(good["exp"], bad / "exp")
        edit(bad / "exp")
    return setup


def sidecar_edit(**changes) -> Callable[[Path], None]:
    def edit(exp: Path) -> None:
        data = json.loads((exp / "model.json").read_text())
        data.update(changes)
        (exp / "model.json").write_text(json.dumps(data))
    return edit


def model_cases() -> list[Case]:
    rows = [
        ("missing", "{bad}/none.onnx", None, ("does not exist",)),
        ("empty-onnx", "{bad}/m.onnx", write("m.onnx", ""), ("m.onnx",)),
        ("garbage-onnx", "{bad}/m.onnx", write("m.onnx", "not a model"), ("m.onnx",)),
        ("txt", "{prof}", None, ("neither",)),
        ("dir-no-sidecar", "{bad}/d", mkdir("d"), ("model.json",)),
        ("tampered-onnx", "{bad}/exp", export_copy(lambda e: (e / "model.onnx").write_bytes(b"x")), ("sha-256",)),
        ("sidecar-deep", "{bad}/exp", export_copy(lambda e: (e / "model.json").write_text(DEEP)), ("nested",)),
        ("sidecar-list", "{bad}/exp", export_copy(lambda e: (e / "model.json").write_text("[]")), ("sidecar",)),
        ("sidecar-files-str", "{bad}/exp", export_copy(sidecar_edit(files="all")), ("files",)),
        ("sidecar-files-path", "{bad}/exp", export_copy(sidecar_edit(files={"../x": {"sha256": "0" * 64,
                                                                                   "bytes": 1}})), ("files",)),
        ("sidecar-bytes-str", "{bad}/exp", export_copy(sidecar_edit(
            files={"model.onnx": {"sha256": "0" * 64, "bytes": "many"}})), ("bytes",)),
        ("sidecar-subnet-str", "{bad}/exp", export_copy(sidecar_edit(subnet="abc")), ("subnet",)),
        ("sidecar-space-str", "{bad}/exp", export_copy(sidecar_edit(space="abc")), ("space",)),
        ("sidecar-macs-neg", "{bad}/exp", export_copy(sidecar_edit(macs=-1)), ("macs",)),
        ("sidecar-acc-str", "{bad}/exp", export_copy(sidecar_edit(accuracy={"top1": "great"})), ("top1",)),
        ("sidecar-wrong-format", "{bad}/exp", export_copy(sidecar_edit(format="other")), ("sidecar",)),
        ("onnx-dir", "{bad}/x.onnx", mkdir("x.onnx"), ("x.onnx",)),
        ("long-path", "{bad}/" + "m" * 300 + ".onnx", None, ("name of 305",)),
    ]
    cases = [Case(f"profile-model-{mid}", ["profile", path], names, setup) for mid, path, setup, names in rows]
    cases += [Case(f"build-engine-{mid}", ["build-engine", path, "--target", "jetson"], names + ("tensorrt",), setup)
              for mid, path, setup, names in rows if mid in ("missing", "dir-no-sidecar", "sidecar-deep",
                                                              "sidecar-list", "sidecar-files-str")]
    return cases


# -- catalogs ---------------------------------------------------------------------------------
def catalog_copy(sql: str) -> Callable[[Path, dict], None]:
    def setup(bad: Path, good: dict) -> None:
        import shutil

        shutil.copy(good["cat"], bad / "c.db")
        con = sqlite3.connect(bad / "c.db")
        con.executescript(sql)
        con.commit()
        con.close()
    return setup


def catalog_cases() -> list[Case]:
    rows = [
        ("parent-is-file", "{prof}/c.db", None, ("c.db", "not a directory", "does not exist")),
        ("is-dir", "{bad}/d.db", mkdir("d.db"), ("d.db", "directory")),
        ("missing", "{bad}/none.db", None, ("none.db", "does not exist", "no catalog")),
        ("text-file", "{bad}/c.db", write("c.db", "hello"), ("c.db",)),
        ("long-name", "{bad}/" + "c" * 300 + ".db", None, ("name of 300", "too long", "does not exist")),
        ("dropped-latency", "{bad}/c.db", catalog_copy("DROP TABLE latency;"), ("c.db", "catalog")),
        ("dropped-subnets", "{bad}/c.db", catalog_copy("DROP TABLE subnets;"), ("c.db", "catalog")),
        ("stats-garbage", "{bad}/c.db", catalog_copy("UPDATE latency SET stats = 'garbage';"), ("c.db", "stats")),
        ("spec-garbage", "{bad}/c.db", catalog_copy("UPDATE subnets SET spec = '[[[';"), ("c.db", "spec")),
        ("macs-text", "{bad}/c.db", catalog_copy("UPDATE subnets SET macs = 'many';"), ("c.db",)),
    ]
    cmds = [
        ("list", ["catalog", "list", "--catalog", "{c}", "--target", "cpu"]),
        ("pareto", ["catalog", "pareto", "--catalog", "{c}", "--target", "cpu"]),
        ("select", ["catalog", "select", "--catalog", "{c}", "--target", "cpu", "--max-latency-ms", "100"]),
        ("show", ["catalog", "show", GOOD_SPEC, "--catalog", "{c}", "--target", "cpu"]),
        ("plot", ["catalog", "plot", "--catalog", "{c}", "--target", "cpu", "--out", "{bad}/p.png"]),
    ]
    cases = []
    for cid, cmd in cmds:
        for rid, path, setup, names in rows:
            cases.append(Case(f"catalog-{cid}-{rid}", [path if a == "{c}" else a for a in cmd], names, setup))
    # only show and import read the catalog's search space
    space_garbage = catalog_copy("UPDATE meta SET value = '[[[' WHERE key = 'space';")
    cases += [
        Case("catalog-show-space-garbage", ["catalog", "show", GOOD_SPEC, "--catalog", "{bad}/c.db", "--target", "cpu"],
             ("search-space",), space_garbage),
        Case("catalog-import-space-garbage", ["catalog", "import", "{prof}", "--catalog", "{bad}/c.db"],
             ("search-space",), space_garbage),
    ]
    return cases


# -- imports ----------------------------------------------------------------------------------
def result_with(edit: Callable[[dict], object]) -> Callable[[Path, dict], None]:
    def setup(bad: Path, good: dict) -> None:
        data = json.loads(Path(good["prof"]).read_text())
        out = edit(data)
        (bad / "r.json").write_text(out if isinstance(out, str) else json.dumps(data if out is None else out))
    return setup


def _set(path: str, value):
    def edit(data: dict) -> None:
        target = data
        keys = path.split(".")
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return edit


def import_cases() -> list[Case]:
    rows = [
        ("neg-p90", _set("latency_ms.p90", -1.0), ("p90",)),
        ("zero-p50", _set("latency_ms.p50", 0.0), ("p50",)),
        ("nan-p90", lambda d: json.dumps(d).replace('"p90": ', '"p90": NaN, "x": ', 1), ("p90",)),
        ("inf-mean", lambda d: json.dumps(d).replace('"mean": ', '"mean": Infinity, "x": ', 1),
         ("mean",)),
        ("str-p90", _set("latency_ms.p90", "fast"), ("p90", "latency")),
        ("huge-p90", _set("latency_ms.p90", 1e400), ("p90", "latency")),
        ("n-zero", _set("n", 0), ("n",)),
        ("n-str", _set("n", "many"), ("n",)),
        ("cov-neg", _set("cov", -1), ("cov",)),
        ("no-latency", lambda d: d.pop("latency_ms") and d, ("latency_ms",)),
        ("latency-list", _set("latency_ms", [1, 2]), ("latency",)),
        ("space-abc", _set("model.space", "abc"), ("space",)),
        ("space-bad-type", _set("model.space", {"in_channels": "one"}), ("in_channels",)),
        ("subnet-bogus", _set("model.subnet", "99-99"), ("malformed", "stages")),
        ("subnet-int", _set("model.subnet", 5), ("subnet",)),
        ("target-missing", lambda d: d.pop("target") and d, ("target",)),
        ("accuracy-str", _set("model.accuracy", {"top1": "great"}), ("model.accuracy.top1",)),
        ("accuracy-list", _set("model.accuracy", [1]), ("model.accuracy",)),
        ("bn-images-str", _set("model.bn", {"images": "many"}), ("model.bn.images",)),
        ("source-int", _set("model.source", 3), ("model.source",)),
        ("batch-zero", _set("batch", 0), ("batch",)),
        ("deep", lambda d: DEEP, ("nested",)),
        ("not-json", lambda d: "{oops", ("not valid json",)),
        ("scalar", lambda d: "3", ("result 0", "profile result")),
        ("good-then-bad", lambda d: [d, {**d, "latency_ms": {**d["latency_ms"], "p90": -5}}], ("result 1",)),
        ("results-not-list", lambda d: {"results": 3}, ("result",)),
    ]
    cases = [Case(f"import-{rid}", ["catalog", "import", "{bad}/r.json", "--catalog", "{bad}/new.db"], names,
                  result_with(edit)) for rid, edit, names in rows]
    cases += [Case(f"import-into-good-{rid}", ["catalog", "import", "{bad}/r.json", "--catalog", "{cat}"], names,
                   result_with(edit)) for rid, edit, names in rows[:6]]
    cases += [
        Case("import-missing", ["catalog", "import", "{bad}/none.json", "--catalog", "{bad}/new.db"],
             ("does not exist",)),
        Case("import-dir", ["catalog", "import", "{bad}/d.json", "--catalog", "{bad}/new.db"], ("directory",),
             mkdir("d.json")),
        Case("import-catalog-parent-file", ["catalog", "import", "{prof}", "--catalog", "{prof}/c.db"],
             ("c.db", "not a directory")),
        Case("import-model-json-missing", ["catalog", "import", "{prof}", "--catalog", "{bad}/new.db",
                                           "--model-json", "{bad}/none.json"], ("none.json",)),
        Case("import-model-json-deep", ["catalog", "import", "{prof}", "--catalog", "{bad}/new.db",
                                        "--model-json", "{bad}/m.json"], ("nested",), write("m.json", DEEP)),
        Case("import-subnet-flag-bad", ["catalog", "import", "{prof}", "--catalog", "{bad}/new.db",
                                        "--subnet", "٣٣"], ("malformed",)),
    ]
    return cases


# -- other commands -------------------------------------------------------------------------
def misc_cases() -> list[Case]:
    return [
        Case("resume-epochs", ["train", "--resume", "{run}", "--epochs", "5"], ("--epochs",)),
        Case("resume-lr", ["train", "--resume", "{run}", "--lr", "0.5"], ("--lr",)),
        Case("resume-seed", ["train", "--resume", "{run}", "--seed", "3"], ("--seed",)),
        Case("resume-missing", ["train", "--resume", "{bad}/none"], ("does not exist",)),
        Case("train-fixed-no-subnet", ["train", "--method", "fixed", "--out", "{bad}/r", "--quiet"], ("--subnet",)),
        Case("train-per-batch-ps", ["train", "--method", "ps", "--per-batch", "3", "--out", "{bad}/r"],
             ("--per-batch",)),
        Case("subnet-sample-unreachable", ["subnet", "sample", "--mflops", "500"], ("500",)),
        Case("export-two-choices", ["export", "{run}", "--smallest", "--largest"], ("--smallest",)),
        Case("export-no-choice", ["export", "{run}"], ("choose exactly one",)),
        Case("export-unreachable", ["export", "{run}", "--mflops", "500", "--out", "{bad}/e"], ("500",)),
        # issue 31: a bound only means something for int8, with calibration images to quantize on
        *[Case(f"export-max-drop-{p}", ["export", "{run}", "--smallest", "--out", "{bad}/e", "--precision", p,
                                        "--max-drop", "0.5"], ("--max-drop",)) for p in ("fp32", "fp16")],
        Case("export-max-drop-default-fp32", ["export", "{run}", "--smallest", "--out", "{bad}/e", "--max-drop", "1"],
             ("--max-drop",)),
        Case("export-max-drop-no-calibration", ["export", "{run}", "--smallest", "--out", "{bad}/e", "--precision",
                                                "int8", "--max-drop", "0.5", "--calibration-images", "0"],
             ("--calibration-images",)),
        Case("export-max-drop-no-accuracy", ["export", "{run}", "--smallest", "--out", "{bad}/e", "--precision",
                                             "int8", "--max-drop", "0.5", "--no-accuracy"], ("--max-drop",)),
        Case("catalog-build-max-drop-fp32", ["catalog", "build", "{run}", "--target", "cpu", "--catalog", "{bad}/c.db",
                                             "--max-drop", "0.5"], ("--max-drop",)),
        Case("eval-name-slash", ["eval", "{run}", "--name", "../x", "--quiet"], ("name",)),
        Case("select-no-budget", ["catalog", "select", "--catalog", "{cat}", "--target", "cpu"], ("budget",)),
        Case("select-unknown-target", ["catalog", "list", "--catalog", "{cat}", "--target", "marsrover"],
             ("marsrover",)),
        Case("predict-missing", ["predictor", "predict", "--predictor", "{bad}/p", GOOD_SPEC], ("predictor",)),
        Case("predict-deep", ["predictor", "predict", "--predictor", "{bad}/p.json", GOOD_SPEC], ("nested",),
             write("p.json", DEEP)),
        Case("predict-list", ["predictor", "predict", "--predictor", "{bad}/p.json", GOOD_SPEC], ("p.json",),
             write("p.json", "[1]")),
        Case("predict-wrong-types", ["predictor", "predict", "--predictor", "{bad}/p.json", GOOD_SPEC],
             ("malformed",), write("p.json", json.dumps({"format": "ofa-deploy/latency-predictor", "format_version": 2,
                                                         "space": "abc"}))),
        Case("predict-empty-object", ["predictor", "predict", "--predictor", "{bad}/p.json", GOOD_SPEC],
             ("p.json",), write("p.json", "{}")),
        Case("reproduce-manifest-deep", ["reproduce", "--out", "{bad}/rep", "--quiet"], ("nested",),
             write("rep/reproduce.json", DEEP)),
        Case("reproduce-manifest-list", ["reproduce", "--out", "{bad}/rep", "--quiet"], ("manifest",),
             write("rep/reproduce.json", "[]")),
        Case("reproduce-manifest-options-str", ["reproduce", "--out", "{bad}/rep", "--quiet"], ("manifest",),
             write("rep/reproduce.json", json.dumps({"options": "all"}))),
        Case("report-no-eval", ["report", "{run}", "--out", "{bad}/rep"], ("evaluation",)),
        Case("train-batch-over-data", ["train", "--batch-size", "100000", "--out", "{bad}/r", "--quiet"],
             ("batch",)),
        Case("train-grad-accum-uneven", ["train", "--grad-accum", "1000", "--out", "{bad}/r", "--quiet"],
             ("micro-batch",)),
        Case("train-subset-over-data", ["train", "--train-subset", "5000000", "--out", "{bad}/r", "--quiet"],
             ("subset",)),
        Case("train-data-dir-missing", ["train", "--dataset", "fmnist", "--data-dir", "{bad}/none", "--out", "{bad}/r",
                                        "--quiet"], ("none",)),
        Case("eval-unreachable-bucket", ["eval", "{run}", "--buckets", "40", "--quiet"], ("40",)),
        Case("interference-bad-pair", ["analyze", "interference", "{run}", "--pair", "abc,def", "--pairs", "0"],
             ("abc",)),
        Case("interference-pair-one", ["analyze", "interference", "{run}", "--pair", "smallest", "--pairs", "0"],
             ("pair",)),
        Case("unknown-command", ["frobnicate"], ("frobnicate",)),
        Case("unknown-option", ["space", "--frob"], ("--frob",)),
    ]


# -- outputs that exist (what --overwrite may replace; no output equals or holds an input) ----
def _user_files(bad: Path, good: dict) -> None:
    (bad / "mine").mkdir()
    (bad / "mine" / "notes.txt").write_text("my notes")


def _foreign_sqlite(bad: Path, good: dict) -> None:
    con = sqlite3.connect(bad / "other.db")
    con.execute("CREATE TABLE things (a TEXT)")
    con.execute("INSERT INTO things VALUES ('precious')")
    con.commit()
    con.close()


def _run_with_eval(bad: Path, good: dict) -> None:
    """A copy of the good run holding evaluations of other parameters under the names a new
    evaluation would take."""
    import shutil

    shutil.copytree(good["run"], bad / "run")
    other = {"params": {"buckets": [99.0], "per_bucket": 1, "seed": 7}, "subnets": [], "buckets": []}
    (bad / "run" / "eval").mkdir()
    for name in ("e", "test-s0-n100"):
        (bad / "run" / "eval" / f"{name}.json").write_text(json.dumps(other))


def output_cases() -> list[Case]:
    export = ["export", "{run}", "--smallest", "--bn-images", "8", "--calibration-images", "4", "--parity-images", "4",
              "--no-accuracy"]
    return [
        Case("export-out-is-run-overwrite", [*export, "--out", "{run}", "--overwrite"], ("{run}",)),
        Case("export-out-in-run-parent", [*export, "--out", "{run}/..", "--overwrite"], ("run",)),
        Case("export-out-user-dir-overwrite", [*export, "--out", "{bad}/mine", "--overwrite"], ("mine",),
             _user_files),
        Case("export-out-exists", [*export, "--out", "{exp}"], ("{exp}", "already exists")),
        Case("export-out-catalog-overwrite", [*export, "--out", "{cat}", "--overwrite"], ("cat.db",)),
        Case("export-out-results-overwrite", [*export, "--out", "{prof}", "--overwrite"], ("prof.json",)),
        Case("plot-out-catalog", ["catalog", "plot", "--catalog", "{cat}", "--target", "cpu", "--out", "{cat}"],
             ("cat.db",)),
        Case("plot-out-results", ["catalog", "plot", "--catalog", "{cat}", "--target", "cpu", "--out", "{prof}"],
             ("prof.json",)),
        Case("list-foreign-sqlite", ["catalog", "list", "--catalog", "{bad}/other.db", "--target", "cpu"],
             ("other.db",), _foreign_sqlite),
        Case("show-foreign-sqlite", ["catalog", "show", GOOD_SPEC, "--catalog", "{bad}/other.db", "--target", "cpu"],
             ("other.db",), _foreign_sqlite),
        Case("import-into-foreign-sqlite", ["catalog", "import", "{prof}", "--catalog", "{bad}/other.db"],
             ("other.db",), _foreign_sqlite),
        Case("import-into-results-file", ["catalog", "import", "{prof}", "--catalog", "{prof}"], ("prof.json",)),
        Case("list-json-file", ["catalog", "list", "--catalog", "{prof}", "--target", "cpu"], ("prof.json",)),
        Case("train-out-export", ["train", "--out", "{exp}", "--quiet"], ("{exp}",)),
        Case("train-out-user-dir", ["train", "--out", "{bad}/mine", "--quiet"], ("mine",), _user_files),
        Case("report-out-run", ["report", "{run}", "--out", "{run}", "--allow-missing-eval"], ("{run}",)),
        Case("report-out-user-dir", ["report", "{run}", "--out", "{bad}/mine", "--allow-missing-eval"], ("mine",),
             _user_files),
        Case("profile-out-sidecar", ["profile", "{exp}", "--out", "{exp}/model.json", "--warmup-s", "0",
                                     "--min-iterations", "2", "--min-time-s", "0"], ("model.json",)),
        Case("profile-out-catalog", ["profile", "{exp}", "--out", "{cat}", "--warmup-s", "0", "--min-iterations", "2",
                                     "--min-time-s", "0"], ("cat.db",)),
        Case("predictor-out-run", ["predictor", "build", "--target", "cpu", "--run", "{run}", "--out", "{run}",
                                   "--n", "10", "--holdout", "0"], ("{run}",)),
        Case("predictor-out-user-dir", ["predictor", "build", "--target", "cpu", "--run", "{run}", "--out",
                                        "{bad}/mine", "--n", "10", "--holdout", "0"], ("mine",), _user_files),
        Case("export-out-dot-overwrite", [*export, "--out", ".", "--overwrite"], ("notes.txt", "cwd"),
             write("cwd/notes.txt", "my notes")),
        Case("eval-name-collision", ["eval", "{bad}/run", "--name", "e", "--quiet"], ("e.json",), _run_with_eval),
        Case("eval-default-name-collision", ["eval", "{bad}/run", "--per-bucket", "100", "--quiet"],
             ("test-s0-n100.json",), _run_with_eval),
        Case("quickstart-out-run", ["quickstart", "--out", "{run}", "--quiet"], ("{run}",)),
        Case("quickstart-out-user-dir", ["quickstart", "--out", "{bad}/mine", "--quiet"], ("mine",), _user_files),
    ]


def all_cases() -> list[Case]:
    return [*number_cases(), *spec_cases(), *run_cases(), *summary_and_eval_cases(), *toml_cases(),
            *model_cases(), *catalog_cases(), *import_cases(), *misc_cases(), *output_cases()]
