import sys

from facesieve.cli import main

sys.exit(main())
