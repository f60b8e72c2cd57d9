import sys

from saliqa.cli import main

sys.exit(main())
