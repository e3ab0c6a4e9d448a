"""One table and one bar chart across runs: ``python eval.py compare RUN_DIR... [--out DIR]``.

Each RUN_DIR is a train.py run folder, an eval.py output folder or a metrics.json; its metrics.json
holds ``metrics`` ({split: {metric: value}}), ``baseline`` (the nearest-training-frame copy on the
same frames), ``protocol`` and, for training runs, ``model_selection``. The table has one row per
run and split with the protocol's headline metrics (``EvalProtocol.primary_keys``) and the baseline's
PSNR beside them; it is written as markdown (``compare.md``) and CSV (``compare.csv``), and the
headline PSNR per split as a grouped bar chart (``compare.png``; matplotlib when installed, else
drawn with PIL). With ``--wandb``, or when ``WANDB_MODE`` is online / offline, the table and the chart
are also logged to W&B (``compare/table``, a ``wandb.Table``; ``compare/chart``, a ``wandb.Image``) in a
run of job type ``compare``, grouped like the training runs (``<data>_<subject>`` when one subject);
W&B picks its own mode (``WANDB_MODE=disabled`` logs nothing).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

__all__ = ["load_run", "compare_rows", "to_markdown", "to_csv", "bar_chart", "wandb_active", "wandb_run", "log_table",
           "compare", "main"]


def load_run(path: os.PathLike | str) -> Dict[str, Any]:
    """Read one run's metrics.json.

    Args:
        path: a run folder, an eval folder or the metrics.json itself.

    Returns:
        ``{"label", "path", "dataset", "method", "subject", "protocol", "metrics", "baseline", "model_selection"}``
        (``dataset``: the data group of a train.py run's config.yaml, else "").

    Raises:
        FileNotFoundError: no metrics.json. ValueError: it holds no ``metrics`` mapping.
    """
    path = Path(path)
    file = path / "metrics.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no metrics.json (pass a train.py run folder or an eval.py out_dir)")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: not valid JSON ({err})") from None
    metrics = data.get("metrics")
    if not isinstance(metrics, Mapping) or not metrics:
        raise ValueError(f"{file}: 'metrics' must be a non-empty mapping split -> metric values")
    baseline = data.get("baseline") or {}
    baseline = baseline.get("metrics", baseline) if isinstance(baseline, Mapping) else {}
    dataset = ""
    config = file.parent / "config.yaml"  # train.py's resolved config: the data group's name (W&B group)
    if config.is_file():
        import yaml

        try:
            dataset = str(((yaml.safe_load(config.read_text()) or {}).get("data") or {}).get("_name") or "")
        except (yaml.YAMLError, AttributeError):
            dataset = ""
    return {
        "label": f"{data.get('method', '?')} ({file.parent.name})", "path": str(file), "dataset": dataset,
        "method": str(data.get("method", "?")), "subject": str(data.get("subject", "?")),
        "protocol": dict(data.get("protocol") or {}), "metrics": dict(metrics), "baseline": dict(baseline or {}),
        "model_selection": str(data.get("model_selection", "")),
    }


def _headline(protocol: Mapping[str, Any]) -> List[str]:
    from zoo.core.metrics import EvalProtocol

    try:
        chosen = EvalProtocol(**dict(protocol))
    except (TypeError, ValueError):  # an older or foreign metrics.json: the full-image keys
        return ["psnr", "ssim", "lpips"]
    return list(chosen.primary_keys)


def compare_rows(runs: Sequence[Mapping[str, Any]]) -> tuple[List[str], List[Dict[str, Any]]]:
    """The table: columns and one row per (run, split).

    Columns: run, method, subject, protocol, split, the headline metrics, ``baseline_<psnr key>`` and
    the gain over the baseline in dB, model selection.
    """
    rows: List[Dict[str, Any]] = []
    keys: List[str] = []
    for run in runs:
        head = _headline(run["protocol"])
        for k in head:
            if k not in keys:
                keys.append(k)
        psnr_key = head[0]
        for split, values in run["metrics"].items():
            base = (run["baseline"] or {}).get(split, {})
            row = {"run": run["label"], "method": run["method"], "subject": run["subject"],
                   "protocol": str(run["protocol"].get("name", "")), "split": split}
            for k in head:
                row[k] = values.get(k)
            row["baseline_psnr"] = base.get(psnr_key)
            row["gain_db"] = (values[psnr_key] - base[psnr_key]) if psnr_key in values and psnr_key in base else None
            row["model_selection"] = run["model_selection"]
            rows.append(row)
    columns = ["run", "method", "subject", "protocol", "split", *keys, "baseline_psnr", "gain_db", "model_selection"]
    return columns, rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def to_markdown(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """The table as GitHub markdown; a note when the runs were scored on different subjects or protocols."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    subjects = {(r["subject"], r["protocol"]) for r in rows}
    if len(subjects) > 1:
        lines.append("")
        lines.append(f"note: the runs were scored on different subjects / protocols {sorted(subjects)}: "
                     "their numbers are not comparable across those rows")
    return "\n".join(lines) + "\n"


def to_csv(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """The table as CSV (empty cells for missing values)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    return buf.getvalue()


def _series(rows: Sequence[Mapping[str, Any]], psnr_key: str):
    runs = list(dict.fromkeys(r["run"] for r in rows))
    splits = list(dict.fromkeys(r["split"] for r in rows))
    value = {(r["run"], r["split"]): r.get(psnr_key) for r in rows}
    base = {}
    for r in rows:
        if r.get("baseline_psnr") is not None:
            base.setdefault(r["split"], r["baseline_psnr"])
    return runs, splits, value, base


def bar_chart(rows: Sequence[Mapping[str, Any]], path: os.PathLike | str, psnr_key: str = "psnr") -> str:
    """Grouped bars of the headline PSNR: one group per split, one bar per run, the baseline as a last
    bar. Returns the backend used ("matplotlib" or "PIL": matplotlib is not a dependency of the zoo)."""
    path = Path(path)
    runs, splits, value, base = _series(rows, psnr_key)
    names = runs + (["nearest-frame baseline"] if base else [])

    def height(name: str, split: str) -> float:
        v = base.get(split) if name == "nearest-frame baseline" else value.get((name, split))
        return float(v) if v is not None else 0.0

    def draw(ax) -> None:
        width = 0.8 / max(len(names), 1)
        for i, name in enumerate(names):
            ax.bar([s + i * width for s in range(len(splits))], [height(name, sp) for sp in splits], width, label=name)
        ax.set_xticks([s + 0.4 - width / 2 for s in range(len(splits))], splits)

    return save_chart(path, (2 + 1.2 * len(splits) * len(names) / 2, 4), f"{psnr_key} (dB)", draw,
                      lambda tmp: _pil_bars(names, splits, height, psnr_key, tmp))


def save_chart(path: os.PathLike | str, figsize: tuple, ylabel: str, draw: Callable[[Any], None],
               pil_fallback: Callable[[Path], None]) -> str:
    """Write a PNG chart through a temporary file: `draw(ax)` on a matplotlib axis when matplotlib is
    installed (it is not a dependency of the zoo), else `pil_fallback(tmp_path)`. Returns the backend."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=figsize)
        draw(ax)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(tmp, format="png")
        plt.close(fig)
        backend = "matplotlib"
    except ImportError:
        pil_fallback(tmp)
        backend = "PIL"
    os.replace(tmp, path)
    return backend


_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127)]


def _pil_bars(names: Sequence[str], splits: Sequence[str], height, label: str, out: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    bar, gap, left, top, plot_h = 28, 30, 60, 20, 260
    group = bar * len(names)
    width = left + len(splits) * (group + gap) + gap
    legend_h = 14 * len(names) + 10
    img = Image.new("RGB", (max(width, 320), top + plot_h + 30 + legend_h), "white")
    draw = ImageDraw.Draw(img)
    peak = max([height(n, s) for n in names for s in splits] + [1.0])
    top_value = peak * 1.1
    y0 = top + plot_h
    draw.line([(left, top), (left, y0), (width - gap // 2, y0)], fill="black")
    for t in range(0, 5):
        v = top_value * t / 4
        y = y0 - plot_h * t / 4
        draw.line([(left - 4, y), (left, y)], fill="black")
        draw.text((4, y - 6), f"{v:.1f}", fill="black", font=font)
    draw.text((4, 2), f"{label} (dB)", fill="black", font=font)
    for si, split in enumerate(splits):
        x = left + gap + si * (group + gap)
        for ni, name in enumerate(names):
            h = plot_h * height(name, split) / top_value
            draw.rectangle([x + ni * bar, y0 - h, x + (ni + 1) * bar - 3, y0], fill=_PALETTE[ni % len(_PALETTE)])
        draw.text((x, y0 + 6), split, fill="black", font=font)
    for ni, name in enumerate(names):
        y = y0 + 30 + 14 * ni
        draw.rectangle([left, y, left + 10, y + 10], fill=_PALETTE[ni % len(_PALETTE)])
        draw.text((left + 16, y - 1), name, fill="black", font=font)
    img.save(out, format="PNG")


def write_text_atomic(path: Path, text: str) -> None:
    """Write text through a temporary file and a rename (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def wandb_active(flag: bool = False) -> bool:
    """Whether to log to W&B: asked for (``--wandb``), or ``WANDB_MODE`` names an active mode
    (online / offline / dryrun); ``WANDB_MODE=disabled`` or unset without the flag: no."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode == "disabled":
        return False
    return bool(flag) or mode in ("online", "offline", "dryrun", "run")


def wandb_run(**init: Any):
    """``wandb.init(**init)`` in the mode wandb picks; offline, said on stderr, when it has no
    credentials at all (the rule of ``zoo.runner.build_logger``). A run left open is finished first."""
    import wandb

    if wandb.run is not None:
        wandb.finish()
    try:
        return wandb.init(**init)
    except wandb.errors.UsageError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"note: W&B has no credentials ({first}); logging offline (`wandb sync` uploads it later)",
              file=sys.stderr)
        return wandb.init(mode="offline", **init)


def log_table(run, prefix: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]],
              png: Optional[os.PathLike | str] = None) -> None:
    """Log ``rows`` as a ``wandb.Table`` (``<prefix>/table``) and the chart as a ``wandb.Image``
    (``<prefix>/chart``) to ``run``; the table's cells are plain numbers and strings."""
    import wandb

    data = [[r.get(c) for c in columns] for r in rows]
    payload = {f"{prefix}/table": wandb.Table(columns=list(columns), data=data)}
    if png is not None:
        payload[f"{prefix}/chart"] = wandb.Image(str(png))
    run.log(payload)


def compare(run_dirs: Sequence[os.PathLike | str], out_dir: os.PathLike | str,
            wandb_log: bool = False, project: str = "avatar-zoo") -> Dict[str, Any]:
    """Write compare.md, compare.csv and compare.png for ``run_dirs`` into ``out_dir``.

    Returns:
        ``{"markdown", "csv", "png", "backend", "columns", "rows"}``.
    """
    if not run_dirs:
        raise ValueError("compare needs at least one RUN_DIR")
    runs = [load_run(p) for p in run_dirs]
    columns, rows = compare_rows(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, cs, png = out / "compare.md", out / "compare.csv", out / "compare.png"
    write_text_atomic(md, to_markdown(columns, rows))
    write_text_atomic(cs, to_csv(columns, rows))
    psnr_key = next((c for c in columns if c.startswith("psnr")), "psnr")
    backend = bar_chart(rows, png, psnr_key)
    if wandb_log:
        groups = sorted({f"{r['dataset']}_{r['subject']}" if r["dataset"] else r["subject"] for r in runs})
        run = wandb_run(project=project, job_type="compare", name="compare", dir=str(out),
                        group=groups[0] if len(groups) == 1 else None,
                        config={"runs": [r["path"] for r in runs], "groups": groups})
        log_table(run, "compare", columns, rows, png)
        run.finish()
    return {"markdown": md, "csv": cs, "png": png, "backend": backend, "columns": columns, "rows": rows}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python eval.py compare RUN_DIR... [--out DIR] [--wandb]``; exit 2 on a user error."""
    parser = argparse.ArgumentParser(prog="python eval.py compare",
                                     description="One table (markdown + CSV) and one bar chart across runs.")
    parser.add_argument("runs", nargs="+", help="run folders (or eval out_dirs / metrics.json files)")
    parser.add_argument("--out", default="runs/compare", help="folder for compare.md, compare.csv, compare.png")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the table and chart to W&B (the default when WANDB_MODE is online/offline)")
    parser.add_argument("--project", default="avatar-zoo", help="W&B project")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        result = compare(args.runs, args.out, wandb_log=wandb_active(args.wandb), project=args.project)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result["markdown"].read_text(), end="")
    note = "" if result["backend"] == "matplotlib" else " (drawn with PIL: matplotlib is not installed)"
    print(f"wrote {result['markdown']}, {result['csv']}, {result['png']}{note}")
    return 0
