"""The reproduction's verdict as Markdown: per bucket, the mean over seeds of each method, the
``RSS - PS`` difference with its bootstrap interval and a verdict word, never a bare count."""

from __future__ import annotations

PAPER_TIME_RATIOS = {"rss": 1.9, "rss-short": 6.1}
"""The paper's training-time speed-ups over OFA-PS (Fig. 4, averaged over datasets)."""

_CLAIM = {"rss_minus_ps": "RSS > PS", "rss_short_minus_ps": "RSS-short > PS", "spread_rss_minus_ps": "RSS narrower"}


def verdict_word(field: str, word: str) -> str:
    """``RSS > PS holds`` / ``RSS > PS fails`` / ``inside the noise``."""
    return word if word == "inside the noise" else f"{_CLAIM[field]} {word}"


def verdict_markdown(v: dict) -> str:
    """The verdict section (accuracies in %, differences and spreads in percentage points)."""

    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}"

    def diff(d):
        lo, hi = d["interval"]
        return f"{_pp(d['mean'])} [{_pp(lo)}, {_pp(hi)}]"

    seeds, boot = v["seeds"], v["bootstrap"]
    level = f"{100 * boot['level']:g} %"
    counts = v["summary"]

    def tally(name):
        c = counts[name]
        return f"holds in {c['holds']}, fails in {c['fails']}, inside the noise in {c['inside the noise']}"

    lines = [
        "## Verdict: does the paper's finding hold?",
        f"Fidelity preset **{v['fidelity']}** ({_choices(v.get('fidelity_choices'))}); "
        f"training seeds {', '.join(map(str, seeds))} "
        f"({len(seeds)} supernet{'s' if len(seeds) != 1 else ''} per method); every run evaluated on the same "
        f"subnets, drawn by evaluation seed {v['eval_seed']}.",
        "",
        f"Per bucket: mean accuracy over seeds and subnets, and the difference RSS - PS in percentage points "
        f"with its {level} bootstrap interval ({boot['draws']} resamples of seeds and subnets, independently; "
        f"numpy seed {boot['seed']}). The claim holds where the interval lies above 0, fails where it lies "
        "below 0, and is inside the noise where it contains 0. The spread (best minus worst subnet, mean over "
        "seeds) is compared by resampling seeds only."
        + (" With one seed the intervals cover the subnet draw only, not training noise." if len(seeds) == 1 else ""),
        "",
        f"RSS > PS {tally('rss_vs_ps')} of {v['n_buckets']} buckets; RSS narrower {tally('rss_narrower')}; "
        f"RSS-short > PS {tally('rss_short_vs_ps')}.",
        "",
        "| MFLOPs | subnets | PS mean | RSS mean | RSS - PS [interval] | verdict | RSS-short mean "
        "| RSS-short - PS [interval] | verdict | PS spread | RSS spread | RSS - PS spread [interval] | verdict |",
        "|---:|---:|---:|---:|---:|:-:|---:|---:|:-:|---:|---:|---:|:-:|",
    ]
    for r in v["buckets"]:
        m, s = r["mean"], r["spread"]
        lines.append(
            f"| {r['mflops']:g} | {r['n_subnets']} | {pct(m['ps'])} | {pct(m['rss'])} | {diff(r['rss_minus_ps'])} | "
            f"{verdict_word('rss_minus_ps', r['rss_minus_ps']['verdict'])} | {pct(m['rss-short'])} | "
            f"{diff(r['rss_short_minus_ps'])} | "
            f"{verdict_word('rss_short_minus_ps', r['rss_short_minus_ps']['verdict'])} | {pct(s['ps'])} | "
            f"{pct(s['rss'])} | {diff(r['spread_rss_minus_ps'])} | "
            f"{verdict_word('spread_rss_minus_ps', r['spread_rss_minus_ps']['verdict'])} |")
    if len(seeds) > 1:
        lines += ["", "Per-seed bucket means (%), PS / RSS / RSS-short:", "",
                  "| MFLOPs | " + " | ".join(f"seed {s}" for s in seeds) + " |",
                  "|---:|" + "---:|" * len(seeds)]
        for r in v["buckets"]:
            sm = r["seed_means"]
            cells = [f"{pct(sm['ps'][i])} / {pct(sm['rss'][i])} / {pct(sm['rss-short'][i])}" for i in range(len(seeds))]
            lines.append(f"| {r['mflops']:g} | " + " | ".join(cells) + " |")
    lines += ["", "| training time (mean over seeds) | measured | speed-up vs OFA-PS | paper's speed-up |",
              "|---|---:|---:|---:|"]
    t, ratio = v["train_wall_time_s"], v["time_ratio_vs_ps"]
    for key, label in (("ps", "OFA-PS"), ("rss", "RSS"), ("rss-short", "RSS-short")):
        measured = f"{t[key]:.1f} s" if t.get(key) else "-"
        speed = "1.00x" if key == "ps" else (f"{ratio[key]:.2f}x" if ratio.get(key) else "-")
        paper = "1.0x" if key == "ps" else f"{PAPER_TIME_RATIOS[key]}x"
        lines.append(f"| {label} | {measured} | {speed} | {paper} |")
    if v.get("device"):
        lines += ["", f"Wall times measured on {v['device']}; the paper's on an RTX 3080 GPU."]
    return "\n".join(lines)


def _pp(x: float) -> str:
    """A difference in signed percentage points; rounding noise never prints as -0.00."""
    return f"{round(100 * x, 2) + 0.0:+.2f}"


def _choices(choices: dict | None) -> str:
    if not choices:
        return "choices not recorded"
    rule = {"warmup_epochs": "ofa-deploy's rule", "macs_stem": "the data's channels"}
    return ", ".join(f"{k.replace('_', '-')} {rule.get(k, '-') if v is None else v}" for k, v in choices.items())
