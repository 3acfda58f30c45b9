"""Run genlab from a checkout without installing the console script: `python cli.py fit ...`."""

from genlab.cli import main

if __name__ == "__main__":
    main()
