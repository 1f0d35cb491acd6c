"""`python -m services <name>`: run one service; the container image's entry point.

One image serves every Deployment of the Helm chart and every service of infra/compose.yaml:
the service is chosen by argument (`registry`, `curation`, `training`, `merging`, `evaluation`,
`rollout`, `serving`), or `cli …` for the operator's `tuneline` command.
"""

from __future__ import annotations

import importlib
import sys

from services.stack import KNOWN_SERVICES


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: python -m services {{{','.join(KNOWN_SERVICES)}}} | cli [tuneline args…]")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name == "cli":
        from services.cli import main as cli_main

        sys.argv = ["tuneline", *rest]
        cli_main()
        return 0
    if name not in KNOWN_SERVICES:
        choices = ", ".join(KNOWN_SERVICES)
        print(f"unknown service {name!r}; choose one of {choices} (or cli)", file=sys.stderr)
        return 2
    importlib.import_module(f"services.{name}.__main__").main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
