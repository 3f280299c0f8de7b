"""`triage` command line: thin adapters around the pure core. stdout carries results only."""

from __future__ import annotations

import argparse
import sys

PLANNED = {
    "serve": ("run the live service: websocket /call ingest, Redis routing, dashboard", "#5"),
    "call": ("stream a WAV file, a synthesized sentence or the microphone to the service", "#6"),
    "dispatch": ("terminal dispatcher console for one service's queue", "#5"),
}


def _not_yet(name: str, issue: str):
    def run(args: argparse.Namespace) -> int:
        print(f"triage {name}: not implemented yet (tracked in issue {issue})", file=sys.stderr)
        return 2
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triage",
        description="Route French emergency calls to SAMU (15), police (17) or pompiers (18) by spotting "
                    "keywords in the caller's speech.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, issue) in PLANNED.items():
        p = sub.add_parser(name, help=f"{help_text} [not implemented yet]", description=help_text)
        p.set_defaults(run=_not_yet(name, issue))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
