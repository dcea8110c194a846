"""`python -m dnsserver` runs the `dnsserver` command."""

import sys

from dnsserver.cli import main

sys.exit(main())
