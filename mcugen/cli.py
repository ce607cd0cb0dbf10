"""Command-line interface: parses arguments, dispatches to commands, maps errors to exit codes."""
import sys


def main(argv=None) -> int:
    print("mcugen: CLI under construction", file=sys.stderr)
    return 2
