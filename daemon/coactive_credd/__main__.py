import sys

from coactive_credd.cli.main import main

sys.exit(main())
