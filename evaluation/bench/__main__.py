import sys

from evaluation.bench.run import main

sys.exit(main())
