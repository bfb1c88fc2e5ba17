"""`python -m nextn.parallel RANK SIZE ADDRESS CUDA`: a follower rank spawned by rank 0 (parallel.launch)."""

import sys

from .launch import follower_main

sys.exit(follower_main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"))
