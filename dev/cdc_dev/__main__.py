import sys

from cdc_dev.cli import main

sys.exit(main())
