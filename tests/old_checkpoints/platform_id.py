"""The platform a run's floating-point bits depend on, so recorded numbers are compared bit for bit
only where they can be: the CPU architecture, NumPy, and its BLAS build and kernel (another kernel
sums a matrix product in another order)."""
import platform

import numpy as np
from threadpoolctl import threadpool_info


def platform_fingerprint() -> str:
    blas = sorted(f"{i['internal_api']} {i['version']} {i.get('architecture')}" for i in threadpool_info()
                  if i["user_api"] == "blas")
    return f"{platform.machine()} numpy {np.__version__} " + "; ".join(blas)
