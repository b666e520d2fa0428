"""Entry point for ``python -m ryx_desktop``."""

from ryx_desktop.cli import main

raise SystemExit(main())
