import os
import sys

# `python -m` puts the current folder first on sys.path; hypersparse imports no module from it that the user did not
# name on the command line (plugins.typed_names_from), so a file planted in a run folder cannot shadow one
try:
    _here = os.getcwd()
except OSError:  # the current folder was removed
    _here = None
if sys.path and sys.path[0] in ("", _here):
    del sys.path[0]

from hypersparse.command import main  # noqa: E402

sys.exit(main())
