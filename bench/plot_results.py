"""A picture of a `make bench` result: training MFU against its ceiling, and sampling against `generate`.

Left: for each preset and training configuration, the MFU our path reached (bar) and the MFU the step's matmuls
alone reach at that model's shapes (the ceiling, a tick), fp32 and bf16 against their own peaks, with the 50%
target. Right: our sampler's speed over `model.generate` at each batch size (median of the paired repeats, the
range as an error bar), eager and compiled, with the 3x target. Third panel, when the run compared the demo
with the stock paths (bench_demo.py --against-stock): seconds per stage, ours against the stock paths'.

Run as: .venv/bin/python bench/plot_results.py [bench/results/latest.json] [--out bench/results/latest.png]
(`make bench` draws it after writing latest.json.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAIN_ROWS = [("fp32", "fp32"), ("fp32_compile", "fp32\ncompiled"), ("bf16", "bf16"),
              ("bf16_compile", "bf16\ncompiled")]  # fmt: skip


def plot(results: dict, out: Path) -> Path:
    """Draw `results` (latest.json's layout) to `out` (PNG, written then renamed); returns `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versus = results["details"].get("demo_vs_stock")
    ratios = [3, 2, 2] if versus else [3, 2]
    fig, axes = plt.subplots(1, len(ratios), figsize=(12 + 4 * bool(versus), 4.5), gridspec_kw={"width_ratios": ratios})
    ax_t, ax_s = axes[:2]
    presets = results["details"]["train"]["presets"]
    x, labels = 0, []
    for preset, row in presets.items():
        for key, label in TRAIN_ROWS:
            if key not in row:
                continue
            precision = "bf16" if key.startswith("bf16") else "fp32"
            peak = row[key]["peak_flops"]
            ceiling = row["gemm_ceiling_flops"][precision] / peak
            color = "tab:orange" if precision == "bf16" else "tab:blue"
            ax_t.bar(x, 100 * row[key]["mfu"], color=color, alpha=0.55 if "compile" in key else 0.9)
            ax_t.plot([x - 0.4, x + 0.4], [100 * ceiling] * 2, color="black", lw=2)
            labels.append((x, f"{preset}\n{label}"))
            x += 1
        x += 0.6
    ax_t.axhline(50, color="tab:red", ls="--", lw=1, label="target 50%")
    ax_t.plot([], [], color="black", lw=2, label="ceiling: the matmuls alone")
    ax_t.set_xticks([p for p, _ in labels], [t for _, t in labels], fontsize=8)
    ax_t.set_ylabel("MFU, % of this CPU's fp32 / bf16 matmul peak")
    # Headroom above 100% for the legend, so it never hides a ceiling tick: ticks reach 96-102% on the AVX2 EPYC
    # (a row's ceiling is divided by that row's re-measured peak, which can dip below the ceiling's matmuls).
    ax_t.set_ylim(0, 114)
    ax_t.set_yticks(range(0, 101, 20))
    ax_t.set_title("Training: our path's MFU (bars) and its ceiling (ticks)")
    ax_t.legend(loc="upper center", ncol=2, fontsize=8)

    sample = results["details"]["sample"]["batches"]
    sizes = sorted(sample, key=int)
    for offset, kind, color in ((-0.18, "eager", "tab:green"), (0.18, "compiled", "tab:purple")):
        prefix = "compiled_" if kind == "compiled" else ""
        pts = [(i, sample[b]) for i, b in enumerate(sizes) if sample[b].get(f"{prefix}ratio")]
        if not pts:
            continue
        mid = [r[f"{prefix}ratio"] for _, r in pts]
        lo = [m - r[f"{prefix}ratio_range"][0] for m, (_, r) in zip(mid, pts, strict=True)]
        hi = [r[f"{prefix}ratio_range"][1] - m for m, (_, r) in zip(mid, pts, strict=True)]
        ax_s.bar([i + offset for i, _ in pts], mid, width=0.36, color=color, yerr=[lo, hi], capsize=3, label=kind)
    ax_s.axhline(3, color="tab:red", ls="--", lw=1, label="target 3x at batch 64")
    ax_s.axhline(1, color="grey", lw=0.8)
    ax_s.set_xticks(range(len(sizes)), [f"batch {b}" for b in sizes])
    ax_s.set_ylabel("our sampler's tokens/s over model.generate")
    ax_s.set_title("Sampling: one eval call (median, range)")
    ax_s.legend(loc="upper left", fontsize=8)

    if versus:
        _plot_end_to_end(axes[2], versus)

    machine = results.get("machine", {})
    when = results.get("date", "").replace("T", " ").replace("+00:00", " UTC")
    fig.suptitle(f"make bench {when} on {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores", fontsize=10)
    fig.tight_layout()
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out


def _plot_end_to_end(ax, versus: dict) -> None:
    """Seconds per stage of the same run config, ours and through the stock paths, side by side."""
    stages = list(versus["stages_s"])
    for offset, label, secs, color in ((-0.2, "ours", versus["stages_s"], "tab:blue"),
                                       (0.2, "stock paths", versus["stock"]["stages_s"], "tab:gray")):  # fmt: skip
        ax.barh([i + offset for i in range(len(stages))], [secs.get(s, 0) for s in stages], height=0.4,
                color=color, label=label)  # fmt: skip
    ax.set_yticks(range(len(stages)), stages)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title(f"End to end: {versus['demo_vs_stock_paths']:.2f}x faster than the stock paths", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, nargs="?", default=HERE / "results" / "latest.json")
    ap.add_argument("--out", type=Path, default=None, help="default: the results file with .png")
    args = ap.parse_args(argv)
    out = plot(json.loads(args.results.read_text()), args.out or args.results.with_suffix(".png"))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
