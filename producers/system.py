"""System metrics: CPU, memory, disk and network I/O (psutil), GPUs (NVML) when present.

Sampled on the SDK's worker thread, never on the training loop's.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

logger = logging.getLogger("runstream")


class SystemSampler:
    """Takes one sample of host and process metrics as a flat ``name -> float`` dict."""

    def __init__(self) -> None:
        try:
            import psutil
        except ImportError:
            logger.info("runstream: psutil is not installed; no system metrics")
            self._psutil: Any = None
        else:
            self._psutil = psutil
            self._process = psutil.Process(os.getpid())
            self._process.cpu_percent(None)  # the first call only starts the measurement
            psutil.cpu_percent(None)
        self._last_io: tuple[float, Any, Any] | None = None
        self._nvml = _Nvml.open()

    def sample(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        psutil = self._psutil
        if psutil is not None:
            try:
                self._sample_host(psutil, metrics)
            except Exception as exc:  # a sampler must never take the worker down
                logger.debug("runstream: system metrics failed: %s", exc)
        if self._nvml is not None:
            metrics.update(self._nvml.sample())
        return metrics

    def _sample_host(self, psutil: Any, metrics: dict[str, float]) -> None:
        metrics["cpu.percent"] = float(psutil.cpu_percent(None))
        memory = psutil.virtual_memory()
        metrics["memory.percent"] = float(memory.percent)
        metrics["memory.used_bytes"] = float(memory.used)
        with self._process.oneshot():
            metrics["proc.cpu_percent"] = float(self._process.cpu_percent(None))
            metrics["proc.rss_bytes"] = float(self._process.memory_info().rss)
            metrics["proc.threads"] = float(self._process.num_threads())
        disk = psutil.disk_io_counters()
        net = psutil.net_io_counters()
        now = time.monotonic()
        if self._last_io is not None and disk is not None and net is not None:
            then, last_disk, last_net = self._last_io
            elapsed = max(now - then, 1e-6)
            metrics["disk.read_bytes_per_s"] = (disk.read_bytes - last_disk.read_bytes) / elapsed
            metrics["disk.write_bytes_per_s"] = (disk.write_bytes - last_disk.write_bytes) / elapsed
            metrics["net.recv_bytes_per_s"] = (net.bytes_recv - last_net.bytes_recv) / elapsed
            metrics["net.sent_bytes_per_s"] = (net.bytes_sent - last_net.bytes_sent) / elapsed
        self._last_io = (now, disk, net)


class _Nvml:
    """GPU utilisation, memory, temperature and power via nvidia-ml-py, when it and a GPU exist."""

    def __init__(self, pynvml: Any, handles: list[Any]) -> None:
        self._nvml = pynvml
        self._handles = handles

    @classmethod
    def open(cls) -> _Nvml | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception:  # not installed, no driver, no GPU: no GPU metrics
            return None
        return cls(pynvml, handles) if handles else None

    def sample(self) -> dict[str, float]:
        nvml = self._nvml
        metrics: dict[str, float] = {}
        for index, handle in enumerate(self._handles):
            prefix = f"gpu.{index}."
            try:
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                metrics[prefix + "utilization"] = float(util.gpu)
                metrics[prefix + "memory_used_bytes"] = float(memory.used)
                metrics[prefix + "memory_percent"] = 100.0 * memory.used / max(memory.total, 1)
                metrics[prefix + "temperature"] = float(
                    nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
                )
                metrics[prefix + "power_watts"] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            except Exception as exc:
                logger.debug("runstream: GPU %d metrics failed: %s", index, exc)
        return metrics
