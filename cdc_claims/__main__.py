import sys

from cdc_claims.cli import main

sys.exit(main())
