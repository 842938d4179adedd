"""``python -m facesieve ...``: the ``facesieve`` command line."""
import sys

from facesieve.cli import main

sys.exit(main())
