"""Machine description printed with every benchmark result."""

from __future__ import annotations

import os
import platform


def machine_info() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            info["memory_kb"] = int(handle.readline().split()[1])
    except OSError:
        pass
    return info
