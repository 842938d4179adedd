"""`facesieve models`: models and registered weights, with their WIDER FACE dev AP (%)."""
from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list available models and pretrained weights",
                       description="Models and registered weights as a table: where the weights come from "
                       "and the WIDER FACE dev-set AP (in percent: easy / medium / hard, official protocol, original "
                       "image size) we measured. --json prints the whole registry.")
    p.add_argument("--json", action="store_true", help="print the registry as JSON (every field and metric)")
    p.set_defaults(func=run)


def _ap(entry: Any) -> str:
    m = entry.metrics.get("wider_val_dev")
    if not m:
        return "-"
    return " / ".join(f"{float(m[k]):.2f}" for k in ("easy", "medium", "hard"))


def _where(entry: Any) -> str:
    if entry.source.startswith("package:"):
        return "shipped"
    if entry.source.startswith(("http://", "https://")):
        return "download"
    if entry.source == "user":
        return "your file" + (f" ({entry.file_name})" if entry.file_name else "")
    return entry.source


def table(rows: list[list[str]], header: list[str]) -> str:
    """Plain-text table, columns left-aligned and padded to their widest cell."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from facesieve.api import DEFAULT_MODEL, available_models
    from facesieve.weights.registry import list_weights

    entries = list_weights()
    if args.json:
        print(json.dumps({"models": available_models(), "default_model": DEFAULT_MODEL,
                          "weights": [asdict(e) for e in entries]}, indent=2))
        return 0
    arch = {"retinaface-mnet025": "retinaface-mobilenet0.25", "retinaface-r50": "retinaface-resnet50",
            "mtcnn": "mtcnn"}
    rows = []
    for e in entries:
        models = [m for m in available_models() if arch.get(m) == e.arch]
        default = e.name in available_models()
        rows.append([e.name + (" *" if e.name == DEFAULT_MODEL else ""), ", ".join(models) or e.arch,
                     "default" if default else "weights=", _where(e), e.license, _ap(e)])
    print(table(rows, ["weights", "model", "use", "source", "license", "WIDER dev AP % (easy / medium / hard)"]))
    print("\n* default model. AP: official WIDER FACE protocol, 500 dev images, original image size; "
          "`facesieve models --json` has the settings and speed figures.")
    return 0
