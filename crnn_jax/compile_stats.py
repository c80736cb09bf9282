"""Counts XLA compilations and their seconds (jax.monitoring), and reads the peak RSS.

An "executable" is one XLA compile or one load from the persistent compilation cache (JAX
times both under the same event); `cache_hits` counts the loads, so compiles = executables -
cache_hits.  The training loop attributes the executables made inside a train-step call to that
step's width bucket, logs `compiles` / `compile_seconds` / `peak_rss_mb` with the other scalars,
and writes `WORKDIR/compile_stats.json` (BENCHMARKS.md: compile time per bucket, recompilations
after warm-up, peak RSS).
"""
import resource
import sys
import threading

import jax

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


class CompileCounter:
  _lock = threading.Lock()

  def __init__(self):
    self.executables = 0
    self.seconds = 0.0
    self.cache_hits = 0
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)
    jax.monitoring.register_event_listener(self._on_event)

  def _on_duration(self, event, duration, **_):
    if event == BACKEND_COMPILE_EVENT:
      with self._lock:
        self.executables += 1
        self.seconds += float(duration)

  def _on_event(self, event, **_):
    if event == CACHE_HIT_EVENT:
      with self._lock:
        self.cache_hits += 1

  def snapshot(self):
    """(executables, their seconds, persistent-cache hits among them)."""
    with self._lock:
      return self.executables, self.seconds, self.cache_hits

  def close(self):
    for unregister, fn in ((jax.monitoring.unregister_event_duration_listener, self._on_duration),
                           (jax.monitoring.unregister_event_listener, self._on_event)):
      try:
        unregister(fn)
      except (AssertionError, ValueError, AttributeError):  # already gone
        pass


def peak_rss_mb() -> float:
  """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
  r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024
