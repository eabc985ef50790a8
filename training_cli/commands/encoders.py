"""`adaptor-train encoders`: the registered encoder presets with their licence and weight access."""

from __future__ import annotations

import json

from training_cli.common import RESEARCH_NOTE


def add_parser(sub) -> None:
    p = sub.add_parser(
        "encoders",
        help="list the encoder presets: source, licence, gated weights, aliases",
        description="List the registered frozen encoders (image and text): the hub id or package their "
        "weights come from, their licence, whether the hub gates the weights behind accepting terms, "
        "and the other names (renamed hub ids) that select them. " + RESEARCH_NOTE,
    )
    p.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    import core_model.encoders  # noqa: F401  (registers the presets)
    from core_model.encoders.registry import list_encoders

    rows = [
        {
            "name": e.name,
            "kind": e.kind,
            "source": e.source,
            "licence": e.licence,
            "gated": e.gated,
            "aliases": e.aliases,
            "description": e.description,
        }
        for e in list_encoders()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<14} {'kind':<6} {'licence':<22} {'gated':<6} source")
    for r in rows:
        print(f"{r['name']:<14} {r['kind']:<6} {r['licence']:<22} {'yes' if r['gated'] else 'no':<6} {r['source']}")
        if r["aliases"]:
            print(f"{'':<14} also: {', '.join(r['aliases'])}")
    print(RESEARCH_NOTE)
    return 0
