"""pdn_perception: PatchDrive perception for ROS 2 (see README.md)."""

import os
import sys

# OpenMP threads that spin while waiting make torch 3-5x slower whenever anything else wants the
# same cores (measured on the 2-core target: 938 vs 194 ms per frame with one other busy process;
# the node's DDS threads are such a neighbour). Passive waiting must be chosen before torch loads
# its OpenMP runtime, so it is set here, at the package's first import; an explicit value wins.
# Where torch was imported first, the setting comes too late; the CPU backend then says so.
OPENMP_POLICY_TOO_LATE: bool = "torch" in sys.modules and "OMP_WAIT_POLICY" not in os.environ
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
