import sys

from hypersparse.cli import main

sys.exit(main())
