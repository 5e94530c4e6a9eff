import sys

from hypersparse.command import main

sys.exit(main())
