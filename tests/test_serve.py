"""crnn-serve as a real process on a free loopback port, talked to with a real HTTP client (httpx)
and its web page driven in Debian's headless chromium (selenium)."""
import base64
import concurrent.futures
import io
import os
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
import zlib

import httpx
import pytest

from crnn_jax import inference, serve

from conftest import why


class Server:
  def __init__(self, workdir, tmp_path, *flags, ready=True, source="--workdir"):
    self.log = tmp_path / f"serve_{time.monotonic_ns()}.log"
    self.proc, self.url = serve.spawn(source, workdir, *flags, stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
    if ready:
      serve.wait_ready(self.proc, self.url, timeout=300, why=lambda: why(self.log.read_text()))

  def stop(self):
    if self.proc.poll() is None:
      self.proc.send_signal(signal.SIGTERM)
      try:
        self.proc.wait(60)
      except subprocess.TimeoutExpired:
        self.proc.kill()


@pytest.fixture(scope="module")
def lines(overfit_data):
  import tensorflow_datasets as tfds
  b = tfds.builder_from_directory(str(overfit_data))
  return [ex["image"] for ex in tfds.as_numpy(b.as_dataset(split="train", decoders={
      "image": tfds.decode.SkipDecoding()}).take(24))]


@pytest.fixture(scope="module")
def expected(reading_workdir, lines):
  r = inference.load(reading_workdir)
  return [x.text for x in r.read(lines)]


@pytest.fixture(scope="module")
def server(reading_workdir, tmp_path_factory):
  s = Server(reading_workdir, tmp_path_factory.mktemp("serve"), "--max-wait-ms", "40", "--max-body-mb", "1",
             "--max-pixels", "2000000", "--max-images", "8")
  yield s
  s.stop()


def test_the_original_contract_post_service(server, lines, expected):
  assert expected.count("") < len(expected) // 2  # the tiny model reads its lines: the checks mean something
  for data, text in zip(lines[:4], expected):
    r = httpx.post(server.url + "/service", content=data, timeout=60)
    assert r.status_code == 200 and r.text == text + "\n"
  if shutil.which("curl"):  # the original's own command line
    p = subprocess.run(["curl", "-s", "-X", "POST", server.url + "/service", "-T", "-"], input=lines[0],
                       capture_output=True, timeout=60)
    assert p.stdout.decode() == expected[0] + "\n"


def test_json_api_multipart_and_base64(server, reading_workdir, lines, expected):
  r = httpx.post(server.url + "/v1/recognize", json={"images": [base64.b64encode(d).decode() for d in lines[:3]],
                                                      "alternatives": 2}, timeout=60)
  assert r.status_code == 200
  body = r.json()
  assert [x["text"] for x in body["results"]] == expected[:3]
  for x in body["results"]:
    assert len(x["char_confidences"]) == len(x["text"]) and 0 <= x["confidence"] <= 1
    assert x["decoder"] == "greedy" and 1 <= len(x["alternatives"]) <= 2
    assert set(x["timing_ms"]) == {"preprocess", "model", "decode"}
  assert body["model"]["step"] > 0 and body["timing_ms"]["total"] > 0
  r = httpx.post(server.url + "/v1/recognize", files=[("image", ("a.jpg", lines[3], "image/jpeg")),
                                                      ("image", ("b.jpg", lines[4], "image/jpeg"))],
                 data={"decoder": "beam"}, timeout=60)
  assert r.status_code == 200, r.text
  assert [x["decoder"] for x in r.json()["results"]] == ["beam", "beam"]
  beam = [x.text for x in inference.load(reading_workdir).read(lines[3:5], decoder="beam")]
  assert [x["text"] for x in r.json()["results"]] == beam
  for path in ("/healthz", "/readyz"):
    assert httpx.get(server.url + path).status_code == 200
  font = httpx.get(server.url + "/font.otf")  # the page's CJK web font, served locally (no CDN)
  assert font.status_code == 200 and font.headers["content-type"] == "font/otf" and len(font.content) > 100_000


def _metric(text, name):
  m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
  return float(m.group(1)) if m else 0.0


def test_concurrent_requests_are_batched_and_read_as_one_by_one(server, lines, expected):
  before = httpx.get(server.url + "/metrics").text
  barrier = threading.Barrier(len(lines))

  def one(data):
    barrier.wait()
    return httpx.post(server.url + "/service", content=data, timeout=120).text

  with concurrent.futures.ThreadPoolExecutor(len(lines)) as pool:
    got = list(pool.map(one, lines))
  assert got == [t + "\n" for t in expected]
  after = httpx.get(server.url + "/metrics").text
  batches = _metric(after, "crnn_batch_lines_count") - _metric(before, "crnn_batch_lines_count")
  read = _metric(after, "crnn_batch_lines_sum") - _metric(before, "crnn_batch_lines_sum")
  assert read == len(lines) and batches < len(lines)  # gathered: fewer device batches than requests
  assert 'crnn_requests_total{route="/service",status="200"}' in after
  assert "crnn_request_seconds_bucket" in after


def _png_header_only(w, h):
  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + \
      chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_limits_answer_clearly_and_leave_the_server_well(server, lines, expected):
  u = server.url
  cases = [
      (httpx.post(u + "/service", content=b"x" * (1024 * 1024 + 1)), 413, "over the limit"),
      (httpx.post(u + "/service", content=_png_header_only(5000, 5000)), 413, "pixels"),
      (httpx.post(u + "/service", content=b"%PDF-1.4 a document"), 415, "accepted formats"),
      (httpx.post(u + "/service", content=lines[0][:200]), 422, "not a readable image"),
      (httpx.post(u + "/service", content=b""), 422, "empty"),
      (httpx.post(u + "/v1/recognize", content=b"{not json", headers={"content-type": "application/json"}), 400,
       "malformed JSON"),
      (httpx.post(u + "/v1/recognize", json={"images": ["@@@"]}), 400, "base64"),
      (httpx.post(u + "/v1/recognize", json={"images": "x"}), 422, "list of base64"),
      (httpx.post(u + "/v1/recognize", json={"images": [base64.b64encode(lines[0]).decode()] * 9}), 422,
       "over the limit of 8"),
      (httpx.post(u + "/v1/recognize", json={"image": base64.b64encode(lines[0]).decode(), "decoder": "x"}), 422,
       "decoder"),
      (httpx.post(u + "/v1/recognize", content=b"abc", headers={"content-type": "text/plain"}), 415, "Content-Type"),
      (httpx.post(u + "/v1/recognize", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"}),
       400, "multipart"),
  ]
  for r, status, words in cases:
    assert r.status_code == status, (status, r.status_code, r.text)
    assert words in r.json()["error"], (words, r.text)
  assert httpx.get(u + "/service").status_code == 405
  # nothing else was affected
  assert httpx.post(u + "/service", content=lines[1], timeout=60).text == expected[1] + "\n"
  m = httpx.get(u + "/metrics").text
  assert _metric(m, 'crnn_request_errors_total{route="/service",status="413"}') >= 2


def test_overload_is_503_with_retry_after(reading_workdir, lines, tmp_path):
  s = Server(reading_workdir, tmp_path, "--max-queue", "1", "--max-batch", "1", "--max-wait-ms", "0")
  try:
    # Beam search with 16 alternatives runs on the host in the device thread: each request keeps
    # the model busy far longer than the next one takes to arrive, so the queue of one fills.
    body = {"images": [base64.b64encode(d).decode() for d in lines[:8]], "decoder": "beam", "alternatives": 16}
    barrier = threading.Barrier(32)

    def one(_):
      barrier.wait()
      return httpx.post(s.url + "/v1/recognize", json=body, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
      got = list(pool.map(one, range(32)))
    codes = [r.status_code for r in got]
    assert set(codes) <= {200, 503} and 503 in codes and 200 in codes, codes
    busy = next(r for r in got if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]
  finally:
    s.stop()


def test_request_timeout_is_504(reading_workdir, lines, tmp_path):
  s = Server(reading_workdir, tmp_path, "--request-timeout-s", "0.001", "--no-warmup")
  try:
    r = httpx.post(s.url + "/service", content=lines[0], timeout=60)
    assert r.status_code == 504 and "not read within" in r.json()["error"]
  finally:
    s.stop()


def test_sigterm_lets_the_request_in_flight_finish(reading_workdir, lines, tmp_path):
  s = Server(reading_workdir, tmp_path)
  from PIL import Image
  src = Image.open(io.BytesIO(lines[0]))
  wide = Image.new("L", (src.width * 14, src.height), 255)  # a width of its own: compiled on this request
  for k in range(14):
    wide.paste(src, (k * src.width, 0))
  buf = io.BytesIO()
  wide.save(buf, "PNG")
  result = {}

  def send():
    result["r"] = httpx.post(s.url + "/service", content=buf.getvalue(), timeout=120)

  t = threading.Thread(target=send)
  t.start()
  time.sleep(0.5)
  s.proc.send_signal(signal.SIGTERM)
  t.join(120)
  assert result["r"].status_code == 200 and result["r"].text.endswith("\n")
  # uvicorn shuts down gracefully, then re-raises the signal it caught: the status says SIGTERM ended it
  assert s.proc.wait(60) in (0, -signal.SIGTERM), why(s.log.read_text())
  with pytest.raises(httpx.TransportError):
    httpx.get(s.url + "/healthz", timeout=2)


def test_serving_an_exported_model(reading_workdir, lines, expected, tmp_path):
  """--model DIR: crnn-export's StableHLO artifact behind the same API, no workdir."""
  from crnn_jax import export
  export.export_all(inference.load(reading_workdir), tmp_path / "exp", ("stablehlo",))
  s = Server(tmp_path / "exp", tmp_path, source="--model")
  try:
    got = [httpx.post(s.url + "/service", content=d, timeout=60).text for d in lines[:6]]
    assert got == [t + "\n" for t in expected[:6]]
    r = httpx.get(s.url + "/readyz").json()
    assert r["model"]["model"] == os.path.abspath(tmp_path / "exp") and r["model"]["step"] == 250
  finally:
    s.stop()


def test_web_page_reads_an_uploaded_image_in_headless_chromium(server, lines, expected, tmp_path):
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  browser = shutil.which("chromium") or shutil.which("chromium-browser")
  driver_bin = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
  assert browser and os.path.exists(driver_bin), \
      "the web test needs Debian's chromium and chromium-driver: `make test` installs them (apt-get)"
  opts = webdriver.ChromeOptions()
  opts.binary_location = browser
  for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,700"):
    opts.add_argument(a)
  d = webdriver.Chrome(service=Service(driver_bin), options=opts)
  try:
    d.get(server.url + "/")
    assert "crnn-jax" in d.title
    img = tmp_path / "line.jpg"
    img.write_bytes(lines[2])
    d.find_element(By.ID, "file").send_keys(str(img))
    WebDriverWait(d, 60).until(lambda drv: "confidence" in drv.find_element(By.ID, "meta").text)
    assert d.find_element(By.ID, "text").text.replace("\n", "") == (expected[2] or "(no text)")
    spans = d.find_elements(By.CSS_SELECTOR, "#text span")
    assert len(spans) == len(expected[2]) and all("confidence" in s.get_attribute("title") for s in spans)
    assert d.find_element(By.ID, "error").text == ""
    d.save_screenshot(str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 1000
  finally:
    d.quit()
