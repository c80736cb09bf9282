"""crnn-serve: the model over HTTP (Starlette on uvicorn), with dynamic batching and a web page.

    crnn-serve --workdir W | --model DIR  [--host 127.0.0.1] [--port 8000] [--max-batch 32]
               [--max-wait-ms 5] [--max-queue 256] [--max-body-mb 10] [--max-pixels 25000000]
               [--max-images 64] [--request-timeout-s 30]

  POST /service          the original example's contract: the raw image bytes as the body -> the
                         text and a newline (curl -X POST http://127.0.0.1:8000/service -T line.jpg)
  POST /v1/recognize     one or many images: multipart/form-data (files in "image", optional fields
                         "decoder", "alternatives") or JSON {"images": [base64, ...] | "image": base64,
                         "decoder": "greedy"|"beam", "alternatives": K} -> {"results": [{text,
                         confidence, char_confidences, alternatives, decoder, timing_ms}], "model",
                         "timing_ms", "batch_rows"}
  GET  /healthz          the process is up;  GET /readyz: the model is loaded and compiled
  GET  /metrics          Prometheus text: requests by route and status, errors, latency and
                         batch-size histograms, queue depth
  GET  /                 a web page: drop, paste or pick an image, see its text shaded by confidence

Requests are decoded and preprocessed in a thread pool (bounded before decoding: body size, then
format and pixel count from the header), then queued; one batcher gathers what arrives within
--max-wait-ms (up to --max-batch lines) into one device batch, as the original's server did.
Errors: 400 malformed request, 413 body or image too large, 415 not an image format we read, 422
unreadable image or bad parameters, 503 + Retry-After when the queue is full, 504 past
--request-timeout-s.  SIGTERM: uvicorn stops accepting, in-flight requests finish, then it exits.
"""
import argparse
import asyncio
import base64
import binascii
import concurrent.futures
import dataclasses
import json
import logging
import os
import pathlib
import sys
import time

from crnn_jax import config_check
from crnn_jax.config_check import Float, Int, arg_type as num

log = logging.getLogger("crnn_jax.serve")

PAGE = pathlib.Path(__file__).with_name("web") / "index.html"
PAGE_FONT = "NotoSansCJKsc-Regular-subset.otf"  # datagen's bundled font (OFL), served to the page as a web font


def page_font():
  """The bundled CJK font file the web page draws its text with (GET /font.otf), found beside
  datagen's package without importing it; None when datagen's fonts are not installed (the page
  then falls back to the browser's fonts)."""
  import importlib.util
  spec = importlib.util.find_spec("datagen")
  if spec is None or spec.origin is None:
    return None
  path = pathlib.Path(spec.origin).parent / "fonts" / PAGE_FONT
  return path if path.exists() else None


@dataclasses.dataclass
class Limits:
  max_body_bytes: int = 10 * 1024 * 1024
  max_pixels: int = 25_000_000
  max_images: int = 64
  max_queue: int = 256
  request_timeout_s: float = 30.0


class HTTPError(Exception):
  def __init__(self, status, message, headers=None):
    super().__init__(message)
    self.status, self.message, self.headers = status, message, headers or {}


_IMAGE_STATUS = {"unsupported": 415, "too_large": 413, "unreadable": 422}


# ---- metrics (Prometheus text format, prometheus_client) ---------------------------------------
class Metrics:
  def __init__(self):
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    prometheus_client.disable_created_metrics()  # no *_created series beside each counter
    self.registry = CollectorRegistry()
    self.requests = Counter("crnn_requests", "HTTP requests", ["route", "status"], registry=self.registry)
    self.errors = Counter("crnn_request_errors", "HTTP requests answered with an error", ["route", "status"],
                          registry=self.registry)
    self.latency = Histogram("crnn_request_seconds", "time from request to response", ["route"],
                             buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30), registry=self.registry)
    self.batch = Histogram("crnn_batch_lines", "lines per device batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128),
                           registry=self.registry)
    self.lines = Counter("crnn_lines", "lines read", registry=self.registry)
    self.queue = Gauge("crnn_queue_depth", "requests waiting for the batcher", registry=self.registry)

  def render(self):
    from prometheus_client import generate_latest
    return generate_latest(self.registry)


# ---- dynamic batching ------------------------------------------------------------------------
@dataclasses.dataclass
class _Item:
  rows: list
  decoder: str
  alternatives: int
  future: asyncio.Future
  queued: float


class Batcher:
  """Gathers queued requests into device batches: when the device is free, the first waiting
  request opens a batch, which takes what else is queued and, while requests are still being read
  and preprocessed, waits for them (at most `max_wait_s`), up to `max_batch` lines; the model runs
  in one worker thread (the device is used by one batch at a time).  Under steady load this
  pipelines: the requests answered by one batch are preprocessed while the next one runs."""

  def __init__(self, reader, max_batch, max_wait_s, max_queue, metrics):
    self.reader, self.max_batch, self.max_wait_s = reader, max_batch, max_wait_s
    self.queue = asyncio.Queue(maxsize=max_queue)
    self.metrics = metrics
    self.arriving = 0  # requests being read and preprocessed: the batch waits only when some are
    self.device = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="crnn-device")
    self._task = None

  def start(self):
    self._task = asyncio.get_running_loop().create_task(self._run())

  async def stop(self):
    if self._task:
      self._task.cancel()
      try:
        await self._task
      except asyncio.CancelledError:
        pass
    self.device.shutdown(wait=True)

  def submit(self, rows, decoder, alternatives):
    """-> a future of the Readings; raises HTTPError(503) when the queue is full."""
    fut = asyncio.get_running_loop().create_future()
    try:
      self.queue.put_nowait(_Item(rows, decoder, alternatives, fut, time.perf_counter()))
    except asyncio.QueueFull:
      raise HTTPError(503, f"the server is busy ({self.queue.maxsize} requests waiting); retry shortly",
                      {"Retry-After": "1"}) from None
    self.metrics.queue.set(self.queue.qsize())
    return fut

  async def _run(self):
    loop = asyncio.get_running_loop()
    while True:
      first = await self.queue.get()
      batch, n = [first], len(first.rows)
      deadline = loop.time() + self.max_wait_s
      while n < self.max_batch:
        if self.queue.empty() and self.arriving == 0:
          break  # nothing else on its way: waiting would only add latency
        left = deadline - loop.time()
        try:
          item = self.queue.get_nowait() if left <= 0 else await asyncio.wait_for(self.queue.get(), left)
        except (asyncio.QueueEmpty, asyncio.TimeoutError):
          break
        batch.append(item)
        n += len(item.rows)
      self.metrics.queue.set(self.queue.qsize())
      batch = [b for b in batch if not b.future.done()]  # timed out while queued: not read
      if not batch:
        continue
      try:
        results = await loop.run_in_executor(self.device, self._read, batch)
      except Exception as e:  # noqa: BLE001 -- every waiting request gets the error, the server goes on
        log.exception("reading a batch failed")
        for b in batch:
          if not b.future.done():
            b.future.set_exception(e)
        continue
      for b, r in zip(batch, results):
        if not b.future.done():
          b.future.set_result(r)

  def _read(self, batch):
    """In the device thread: one read per (decoder, alternatives) group of the batch."""
    out = [None] * len(batch)
    groups = {}
    for i, b in enumerate(batch):
      groups.setdefault((b.decoder, b.alternatives), []).append(i)
    for (decoder, alts), idx in groups.items():
      rows = [r for i in idx for r in batch[i].rows]
      self.metrics.batch.observe(len(rows))
      self.metrics.lines.inc(len(rows))
      readings = self.reader.read_prepared(rows, decoder=decoder, alternatives=alts)
      k = 0
      for i in idx:
        out[i] = (readings[k:k + len(batch[i].rows)], len(rows))
        k += len(batch[i].rows)
    return out


# ---- the application -------------------------------------------------------------------------
def create_app(reader, limits=None, max_batch=32, max_wait_ms=5.0, warm=True, model_info=None):
  """The Starlette app around a `inference.Reader` (or anything with its read_prepared/prepare)."""
  import contextlib
  from starlette.applications import Starlette
  from starlette.formparsers import MultiPartParser
  from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
  from starlette.routing import Route
  from crnn_jax import inference

  limits = limits or Limits()
  metrics = Metrics()
  state = {"ready": False}
  pool = concurrent.futures.ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="crnn-decode")
  batcher = Batcher(reader, max_batch, max_wait_ms / 1e3, limits.max_queue, metrics)
  info = dict(model_info or {}, step=reader.step, weights=reader.weights, devices=reader.steps.devices,
              default_decoder=reader.settings["decoder"])

  def prepare(blobs):
    rows = []
    for i, data in enumerate(blobs):
      try:
        rows.append(reader.prepare(data, max_pixels=limits.max_pixels, max_bytes=limits.max_body_bytes))
      except inference.ImageError as e:
        where = f"image {i + 1}: " if len(blobs) > 1 else ""
        raise HTTPError(_IMAGE_STATUS.get(e.kind, 422), f"{where}{e}") from None
    return rows

  async def body_of(request):
    """The request body, refused (413) past max_body_bytes before more of it is read."""
    declared = request.headers.get("content-length")
    if declared is not None:
      try:
        if int(declared) > limits.max_body_bytes:
          raise HTTPError(413, f"body of {declared} bytes, over the limit of {limits.max_body_bytes}")
      except ValueError:
        raise HTTPError(400, f"Content-Length {declared!r} is not a number") from None
    chunks, size = [], 0
    async for chunk in request.stream():
      size += len(chunk)
      if size > limits.max_body_bytes:
        raise HTTPError(413, f"body over the limit of {limits.max_body_bytes} bytes")
      chunks.append(chunk)
    return b"".join(chunks)

  async def read(blobs, decoder, alternatives):
    if not blobs:
      raise HTTPError(422, "no image in the request")
    if len(blobs) > limits.max_images:
      raise HTTPError(422, f"{len(blobs)} images in one request, over the limit of {limits.max_images}")
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    batcher.arriving += 1
    try:
      rows = await loop.run_in_executor(pool, prepare, blobs)
      t1 = time.perf_counter()
      if not state["ready"]:
        raise HTTPError(503, "the model is still loading", {"Retry-After": "5"})
      fut = batcher.submit(rows, decoder, alternatives)
    finally:
      batcher.arriving -= 1
    try:
      readings, batch_rows = await asyncio.wait_for(asyncio.shield(fut), limits.request_timeout_s)
    except asyncio.TimeoutError:
      fut.cancel()
      raise HTTPError(504, f"not read within {limits.request_timeout_s} s; the server is overloaded") from None
    pre = (t1 - t0) * 1e3 / len(rows)
    for r in readings:
      r.timing_ms["preprocess"] = pre
    return readings, {"preprocess": (t1 - t0) * 1e3, "total": (time.perf_counter() - t0) * 1e3}, batch_rows

  def observed(route):
    def wrap(handler):
      async def endpoint(request):
        t = time.perf_counter()
        try:
          response = await handler(request)
        except HTTPError as e:
          response = JSONResponse({"error": e.message, "status": e.status}, e.status, headers=e.headers)
        except Exception:  # noqa: BLE001
          log.exception("%s failed", route)
          response = JSONResponse({"error": "internal error", "status": 500}, 500)
        metrics.requests.labels(route, str(response.status_code)).inc()
        if response.status_code >= 400:
          metrics.errors.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - t)
        return response
      return endpoint
    return wrap

  def options(decoder, alternatives):
    if decoder in (None, ""):
      decoder = reader.settings["decoder"]
    if decoder not in ("greedy", "beam"):
      raise HTTPError(422, f"decoder {decoder!r}: choose greedy or beam")
    try:
      alternatives = int(alternatives or 0)
    except (TypeError, ValueError):
      raise HTTPError(422, f"alternatives {alternatives!r} is not a whole number") from None
    if not 0 <= alternatives <= 16:
      raise HTTPError(422, f"alternatives {alternatives}: give 0 to 16")
    return decoder, alternatives

  @observed("/service")
  async def service(request):
    data = await body_of(request)
    readings, _, _ = await read([data], reader.settings["decoder"], 0)
    return PlainTextResponse(readings[0].text + "\n")

  @observed("/v1/recognize")
  async def recognize(request):
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
      raw = await body_of(request)  # bounded first, then parsed

      async def chunks():
        yield raw
        yield b""
      try:
        form = await MultiPartParser(request.headers, chunks(), max_files=limits.max_images + 1, max_fields=16,
                                     max_part_size=limits.max_body_bytes).parse()
      except Exception as e:  # noqa: BLE001 -- python-multipart's and Starlette's errors: a malformed body
        raise HTTPError(400, f"malformed multipart body ({e})") from None
      files = form.getlist("image")
      blobs = []
      for f in files:
        if isinstance(f, str):
          raise HTTPError(422, "the 'image' field must be a file")
        blobs.append(await f.read())
      decoder, alternatives = options(form.get("decoder"), form.get("alternatives"))
    elif ctype == "application/json":
      raw = await body_of(request)
      try:
        payload = json.loads(raw)
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HTTPError(400, f"malformed JSON ({e})") from None
      if not isinstance(payload, dict):
        raise HTTPError(422, "the JSON body must be an object with 'images' (a list of base64 strings) or 'image'")
      items = payload.get("images", [payload["image"]] if "image" in payload else None)
      if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise HTTPError(422, "'images' must be a list of base64 strings (or 'image' one string)")
      blobs = []
      for i, x in enumerate(items):
        try:
          blobs.append(base64.b64decode(x, validate=True))
        except (binascii.Error, ValueError):
          raise HTTPError(400, f"image {i + 1} is not valid base64") from None
      decoder, alternatives = options(payload.get("decoder"), payload.get("alternatives"))
    else:
      raise HTTPError(415, f"Content-Type {ctype or 'missing'}: send multipart/form-data or application/json "
                           "(or the raw bytes to /service)")
    readings, timing, batch_rows = await read(blobs, decoder, alternatives)
    return JSONResponse({"results": [r.to_dict() for r in readings], "model": info,
                         "timing_ms": {k: round(v, 3) for k, v in timing.items()}, "batch_rows": batch_rows})

  async def healthz(request):
    return JSONResponse({"status": "ok"})

  async def readyz(request):
    if state["ready"]:
      return JSONResponse({"status": "ready", "model": info})
    return JSONResponse({"status": "loading"}, 503, headers={"Retry-After": "5"})

  async def metrics_endpoint(request):
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

  async def page(request):
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))

  font_path = page_font()

  async def font(request):
    if font_path is None:
      return JSONResponse({"error": "no bundled font installed", "status": 404}, 404)
    return FileResponse(font_path, media_type="font/otf", headers={"Cache-Control": "public, max-age=86400"})

  async def startup():
    batcher.start()
    if warm:
      # Compile the greedy step for every bucket at 1 row (the shapes single requests hit) before
      # saying ready; other batch sizes compile on first use.
      import numpy as np
      loop = asyncio.get_running_loop()

      def warmup():
        t = time.perf_counter()
        sizes = sorted({reader.batch_rows(n) for n in range(1, max_batch + 1)})
        for b in reader.buckets:
          for n in sizes:
            reader.read_prepared([np.full((reader.height, b), 0.5, np.float32)] * n, decoder="greedy")
        if reader.settings["decoder"] == "beam":  # the default decoding: its step at 1 row too
          for b in reader.buckets:
            reader.read_prepared([np.full((reader.height, b), 0.5, np.float32)], decoder="beam")
        log.info("compiled the greedy step for %d widths x batch rows %s in %.1f s", len(reader.buckets), sizes,
                 time.perf_counter() - t)
      await loop.run_in_executor(batcher.device, warmup)
    state["ready"] = True
    log.info("ready: step %s, buckets %s", reader.step, reader.buckets)

  async def shutdown():
    state["ready"] = False
    await batcher.stop()
    pool.shutdown(wait=False)

  @contextlib.asynccontextmanager
  async def lifespan(app):
    await startup()
    try:
      yield
    finally:
      await shutdown()

  app = Starlette(routes=[
      Route("/", page), Route("/font.otf", font), Route("/healthz", healthz), Route("/readyz", readyz),
      Route("/metrics", metrics_endpoint), Route("/service", service, methods=["POST"]),
      Route("/v1/recognize", recognize, methods=["POST"])], lifespan=lifespan)
  app.state.metrics, app.state.batcher = metrics, batcher
  return app


# ---- a local server in a subprocess (tests, benchmarks, the README's screenshot) --------------
def free_port():
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def spawn(*args, stdout=None, stderr=None):
  """`crnn-serve ARGS` (e.g. "--workdir", W) on a free loopback port -> (process, base url)."""
  import subprocess
  port = free_port()
  proc = subprocess.Popen([sys.executable, "-m", "crnn_jax.serve", *map(str, args), "--port", str(port)],
                          stdout=stdout, stderr=stderr)
  return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc, url, timeout=600, why=lambda: ""):
  """Polls GET /readyz until 200; raises RuntimeError (with `why()`) if the process exits or time runs out."""
  import urllib.error
  import urllib.request
  t = time.time()
  while time.time() - t < timeout:
    if proc.poll() is not None:
      raise RuntimeError(f"crnn-serve exited with status {proc.returncode}: {why()}")
    try:
      with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
        if r.status == 200:
          return
    except (urllib.error.URLError, OSError):
      pass
    time.sleep(0.5)
  raise RuntimeError(f"crnn-serve not ready after {timeout} s: {why()}")


def main(argv=None):
  ap = config_check.parser(prog="crnn-serve", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  src = ap.add_mutually_exclusive_group(required=True)
  src.add_argument("--workdir", help="a training workdir (its best checkpoint's EMA weights, its decoding)")
  src.add_argument("--model", help="crnn-export's output folder (its StableHLO model; greedy or beam without LM)")
  from crnn_jax.workdir import (add_checkpoint_flags, add_decoder_flags, add_device_flags, decoder_overrides,
                                 reading_mesh, setup_cpu_devices)
  add_checkpoint_flags(ap)
  add_decoder_flags(ap)
  add_device_flags(ap)
  ap.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
  ap.add_argument("--port", type=num(Int(0, 65535)), default=8000)
  ap.add_argument("--max-batch", type=num(Int(1, 4096)), default=32, help="lines per device batch")
  ap.add_argument("--max-wait-ms", type=num(Float(0.0, 10_000.0)), default=5.0, help="how long a batch waits for more requests")
  ap.add_argument("--max-queue", type=num(Int(1)), default=256, help="requests waiting before 503")
  ap.add_argument("--max-body-mb", type=num(Float(0.0, 4096.0, lo_open=True)), default=10.0)
  ap.add_argument("--max-pixels", type=num(Int(1)), default=25_000_000, help="per image, read from its header before decoding")
  ap.add_argument("--max-images", type=num(Int(1)), default=64, help="images per request")
  ap.add_argument("--request-timeout-s", type=num(Float(0.0, lo_open=True)), default=30.0)
  ap.add_argument("--graceful-shutdown-s", type=num(Float(0.0)), default=30.0, help="on SIGTERM, how long in-flight requests may take")
  ap.add_argument("--no-warmup", action="store_true", help="ready at once; compile on first requests")
  args = ap.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="crnn-serve: %(message)s")
  log.setLevel(logging.INFO)
  setup_cpu_devices(args.cpu_devices)
  from crnn_jax import inference
  from crnn_jax.errors import UserError
  try:
    if args.workdir:
      reader = inference.load(args.workdir, args.checkpoint, args.weights, decoding=decoder_overrides(args),
                              mesh=reading_mesh())
      model_info = {"workdir": os.path.abspath(args.workdir)}
    else:
      reader = inference.load_exported(args.model, decoding=decoder_overrides(args))
      model_info = {"model": os.path.abspath(args.model)}
  except UserError as e:
    print(f"crnn-serve: error: {e}", file=sys.stderr)
    return 2
  limits = Limits(max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_pixels=args.max_pixels,
                  max_images=args.max_images, max_queue=args.max_queue, request_timeout_s=args.request_timeout_s)
  app = create_app(reader, limits, args.max_batch, args.max_wait_ms, warm=not args.no_warmup, model_info=model_info)
  import uvicorn
  uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
              timeout_graceful_shutdown=args.graceful_shutdown_s)
  return 0


def run():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  # numpy's OpenBLAS (the resize's two small matmuls per image, in the preprocessing threads) on one
  # thread: its spinning worker threads fought the model's XLA threads for the cores, 14.2 -> 8.6 ms
  # of server CPU per request at 16 clients (BENCHMARKS.md, "Serving under load").  Set before
  # numpy is imported.
  os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
  sys.exit(main())


if __name__ == "__main__":
  run()
