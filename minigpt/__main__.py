"""`python -m minigpt` and the `minigpt` command.

Loading torch takes a second or two; a Ctrl-C in that time ends the command quietly (exit 130),
as it does later on, instead of with a traceback from inside an import.
"""

import sys


def main() -> int:
    try:
        from minigpt.cli import main as run_command
    except KeyboardInterrupt:
        print("minigpt: stopped by SIGINT", file=sys.stderr)
        return 130
    return run_command()


if __name__ == "__main__":
    sys.exit(main())
