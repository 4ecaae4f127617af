"""The ``gadms`` console script (placeholder until the subcommands land)."""


def main(argv=None) -> int:
    raise SystemExit("gadms: no subcommands yet")
