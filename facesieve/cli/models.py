"""`facesieve models`: list models and registered weights with their measured metrics."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list available models and pretrained weights")
    p.add_argument("--json", action="store_true", help="print the registry as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from facesieve.api import available_models
    from facesieve.weights.registry import list_weights

    entries = list_weights()
    if args.json:
        print(json.dumps({"models": available_models(), "weights": [asdict(e) for e in entries]}, indent=2))
        return 0
    print("models:", ", ".join(available_models()))
    for e in entries:
        print(f"\n{e.name}  [{e.arch}, {e.format}]  {e.license}\n  source: {e.source}")
        for k, v in e.metrics.items():
            print(f"  {k}: {v}")
    return 0
