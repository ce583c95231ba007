import sys

from coactive_credd.cli import main

sys.exit(main())
