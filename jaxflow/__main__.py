"""``python -m jaxflow``: the ``jaxflow`` command line (:mod:`jaxflow.cli`)."""

import sys

from jaxflow.cli import main

sys.exit(main())
