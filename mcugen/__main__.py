"""`python -m mcugen` entry point."""

from mcugen.cli import main

raise SystemExit(main())
