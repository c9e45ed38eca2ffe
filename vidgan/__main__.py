import sys

from vidgan.cli import main

sys.exit(main())
