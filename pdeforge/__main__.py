import sys

from pdeforge.cli import main

sys.exit(main())
