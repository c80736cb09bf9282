"""Load on crnn-serve: 1, 4, 16, 64 concurrent clients -> throughput, latency percentiles, errors.

    python bench/serve_load.py --workdir runs/poem_cpu [--data D --split test] [--seconds 20] \
        [--levels 1,4,16,64] [--write BENCHMARKS.md]

First, alone: crnn-predict's reading in this process (the inference core, greedy, on as many
CPU devices as crnn-predict and crnn-serve use, --cpu-devices): its batched throughput over the
images (their bytes decoded, resized and read as one chunk of crnn-predict), the model alone on
rows prepared beforehand, and the 1-image latency (decode + preprocess + model + CTC decoding,
median).  Then crnn-serve starts on a free loopback port (the run's own decoding unless --decoder)
and each level runs for --seconds: every client (a keep-alive HTTP/1.1 connection; all clients on
one asyncio loop, their requests written and answers parsed by hand, so that the client costs
little CPU beside the server) POSTs one image's bytes to /service, waits for the text, and sends
the next.  Throughput = answered requests / seconds; latency = request to response on the client.
The server and the clients share this machine's cores (loopback only).
Targets (issue 19): at 16 clients >= 70% of crnn-predict's batched throughput with 0 errors; 1
client's p50 <= 2x the bare 1-image latency.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BEGIN, END = "<!-- serve-load:begin -->", "<!-- serve-load:end -->"


def bare_model(workdir, raw, decoder, repeats=3, single=50):
  """The reading path crnn-predict takes, in this process, alone: -> (images/s of crnn-predict's
  batched reading: bytes decoded, resized, read in one `Reader.read` call as a chunk of crnn-predict
  is; images/s of the model alone on rows prepared beforehand; the median 1-image latency; decoder;
  step)."""
  from crnn_jax import inference
  from crnn_jax.workdir import reading_mesh
  reader = inference.load(workdir, decoding={"decoder": decoder} if decoder else None, mesh=reading_mesh())
  rows = [reader.prepare(b) for b in raw]
  reader.read_prepared(rows)  # compile every bucket and batch size used
  model, predict = [], []
  for _ in range(repeats):
    t = time.perf_counter()
    reader.read_prepared(rows)
    model.append(time.perf_counter() - t)
    t = time.perf_counter()
    reader.read([inference.Prepared(reader.prepare(b)) for b in raw])  # crnn-predict's chunk
    predict.append(time.perf_counter() - t)
  for b in raw[:10]:
    reader.read([b])
  lat = []
  for b in raw[:single]:
    t = time.perf_counter()
    reader.read([b])  # decode + preprocess + model + CTC decoding, one image
    lat.append(time.perf_counter() - t)
  return {"predict_ips": len(raw) / statistics.median(predict), "model_ips": len(raw) / statistics.median(model),
          "latency_s": statistics.median(lat), "decoder": reader.settings["decoder"], "step": reader.step,
          "devices": reader.steps.devices}


async def _client(host, port, raw, k, step, stop, lat, codes):
  """One keep-alive HTTP/1.1 connection POSTing raw[k], raw[k + step], ... to /service until `stop`.
  The requests are written and the responses parsed by hand (status line, Content-Length, body):
  a client costs tens of microseconds a request, so the bench measures the server, not the client."""
  import asyncio
  heads = [f"POST /service HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/octet-stream\r\n"
           f"Content-Length: {len(b)}\r\n\r\n".encode() for b in raw]
  reader = writer = None
  i = k
  while time.perf_counter() < stop:
    t = time.perf_counter()
    try:
      if writer is None:
        reader, writer = await asyncio.open_connection(host, port)
      j = i % len(raw)
      writer.write(heads[j] + raw[j])
      head = await reader.readuntil(b"\r\n\r\n")
      lines = head.decode("latin-1").split("\r\n")
      code = int(lines[0].split()[1])
      length = next(int(v) for n, _, v in (x.partition(":") for x in lines[1:]) if n.lower() == "content-length")
      await reader.readexactly(length)
      if any(x.lower().startswith("connection: close") for x in lines[1:]):
        writer.close()
        writer = None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, StopIteration) as e:
      code = type(e).__name__
      if writer is not None:
        writer.close()
      writer = None
    dt = time.perf_counter() - t
    codes[code] = codes.get(code, 0) + 1
    if code == 200:
      lat.append(dt)
    i += step
  if writer is not None:
    writer.close()


def load_level(url, raw, clients, seconds):
  """`clients` concurrent keep-alive connections on one event loop (uvloop when installed), each sending
  the next image as soon as its answer is in, for `seconds`."""
  import asyncio
  host, port = url.split("//")[1].split(":")
  lat, codes = [], {}

  async def run():
    stop = time.perf_counter() + seconds
    await asyncio.gather(*(_client(host, int(port), raw, k, clients, stop, lat, codes) for k in range(clients)))

  try:
    import uvloop
    runner = uvloop.run
  except ImportError:
    runner = asyncio.run
  t0 = time.perf_counter()
  runner(run())
  elapsed = time.perf_counter() - t0
  ok = codes.get(200, 0)
  q = np.quantile(lat, [0.5, 0.95, 0.99]) * 1e3 if lat else [float("nan")] * 3
  return {"clients": clients, "seconds": round(elapsed, 1), "ok": ok, "errors": sum(codes.values()) - ok,
          "codes": {str(k): v for k, v in codes.items()}, "req_s": ok / elapsed,
          "p50_ms": float(q[0]), "p95_ms": float(q[1]), "p99_ms": float(q[2])}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--data", default=None)
  ap.add_argument("--split", default="test")
  ap.add_argument("--n", type=int, default=256)
  ap.add_argument("--seconds", type=float, default=20.0)
  ap.add_argument("--levels", default="1,4,16,64")
  ap.add_argument("--decoder", default="greedy", help="the server's decoding (greedy: the model alone)")
  ap.add_argument("--max-wait-ms", type=float, default=5.0)
  ap.add_argument("--unbatched", action=argparse.BooleanOptionalAction, default=True,
                  help="also 16 clients against a server reading one request at a time (--max-batch 1)")
  ap.add_argument("--write", default=None)
  from crnn_jax.workdir import add_device_flags, setup_cpu_devices
  add_device_flags(ap)
  args = ap.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  setup_cpu_devices(args.cpu_devices)  # as crnn-predict and crnn-serve read, before jax is imported
  from bench.export_bench import load_split
  from crnn_jax.inference import read_config
  data = args.data or read_config(args.workdir).data_dir
  raw = [b for b, _ in load_split(data, args.split, args.n)]
  bare = bare_model(args.workdir, raw, args.decoder)
  base_ips, base_lat, decoder = bare["predict_ips"], bare["latency_s"], bare["decoder"]
  print(f"crnn-predict's path: {base_ips:.0f} img/s batched (the model alone on prepared rows: "
        f"{bare['model_ips']:.0f}), {1e3 * base_lat:.1f} ms for one image", flush=True)
  results = run_server(args, raw, decoder, [int(x) for x in args.levels.split(",")], [])
  # One by one: the same server reading each request alone (--max-batch 1), at 16 clients.
  unbatched = run_server(args, raw, decoder, [16], ["--max-batch", "1"])[0] if args.unbatched else None
  lines = [BEGIN, "",
           f"`python bench/serve_load.py --workdir {args.workdir} --data {data} --split {args.split} --seconds "
           f"{args.seconds:g}` (checkpoint step {bare['step']}, {decoder} decoding, {len(raw)} different images "
           f"cycled, `--max-wait-ms {args.max_wait_ms:g}`, {bare['devices']} CPU device(s) in the server and in "
           f"crnn-predict, `--cpu-devices`). crnn-predict's reading in one process, alone: **{base_ips:.0f} images/s** "
           f"batched (the image bytes decoded, resized and read as one chunk of crnn-predict; the model alone on "
           f"rows prepared beforehand: {bare['model_ips']:.0f} images/s), **{1e3 * base_lat:.1f} ms** for one image.",
           "",
           "| clients | requests/s | vs crnn-predict batched | vs the model alone | p50 ms | p95 ms | p99 ms | errors |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in results + ([dict(unbatched, clients="16, one by one (`--max-batch 1`)")] if unbatched else []):
    lines.append(f"| {r['clients']} | {r['req_s']:.1f} | {100 * r['req_s'] / base_ips:.0f}% | "
                 f"{100 * r['req_s'] / bare['model_ips']:.0f}% | {r['p50_ms']:.1f} | "
                 f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |")
  by = {r["clients"]: r for r in results}
  if 16 in by and 1 in by:
    lines += ["", f"Targets: 16 clients at {100 * by[16]['req_s'] / base_ips:.0f}% of crnn-predict's batched "
                  f"throughput (target >= 70%) with {by[16]['errors']} errors; 1 client's p50 {by[1]['p50_ms']:.1f} ms "
                  f"= {by[1]['p50_ms'] / (1e3 * base_lat):.2f}x the bare 1-image latency (target <= 2x)."]
    if unbatched:
      lines[-1] += f" Dynamic batching at 16 clients: {by[16]['req_s'] / unbatched['req_s']:.2f}x one by one."
  lines += ["", END]
  from bench.markdown import emit
  emit(lines, args.write, BEGIN, END, "Serving under load")


def run_server(args, raw, decoder, levels, extra):
  from crnn_jax import serve
  proc, url = serve.spawn("--workdir", args.workdir, "--decoder", decoder, "--max-wait-ms", args.max_wait_ms,
                          "--cpu-devices", args.cpu_devices, *extra,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    serve.wait_ready(proc, url, why=lambda: proc.stderr.read()[-3000:].decode(errors="replace"))
    load_level(url, raw, 16, 5.0)  # warm: the batch sizes concurrency makes compile here
    results = []
    for c in levels:
      r = load_level(url, raw, c, args.seconds)
      results.append(r)
      print(json.dumps(dict(r, extra=extra)), flush=True)
  finally:
    proc.terminate()
    proc.wait(60)
  return results


if __name__ == "__main__":
  main()
