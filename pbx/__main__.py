"""``python -m pbx``: the same command line as the ``pbx`` console script."""

from pbx.cli import main

raise SystemExit(main())
