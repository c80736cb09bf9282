"""Counts XLA compilations and their seconds (jax.monitoring), and reads the peak RSS.

The training loop attributes the compiles that happen inside a train-step call to that step's
width bucket, logs `compiles` / `compile_seconds` / `peak_rss_mb` with the other scalars, and
writes `WORKDIR/compile_stats.json` (BENCHMARKS.md: compile time per bucket, recompilations
after warm-up, peak RSS).  A compile served by the persistent compilation cache is not counted:
it is not a backend compile.
"""
import resource
import sys
import threading

import jax

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
  _lock = threading.Lock()

  def __init__(self):
    self.count = 0
    self.seconds = 0.0
    jax.monitoring.register_event_duration_secs_listener(self._on_event)

  def _on_event(self, event, duration, **_):
    if event == BACKEND_COMPILE_EVENT:
      with self._lock:
        self.count += 1
        self.seconds += float(duration)

  def snapshot(self):
    with self._lock:
      return self.count, self.seconds

  def close(self):
    try:
      jax.monitoring.unregister_event_duration_listener(self._on_event)
    except (AssertionError, ValueError, AttributeError):  # already gone
      pass


def peak_rss_mb() -> float:
  """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
  r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024
