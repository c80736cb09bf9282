"""The web page of crnn-serve, as a picture for the README: start the server on a workdir, open its
page in headless chromium, upload an image, wait for the text, save a screenshot.

    python tools/page_screenshot.py --workdir runs/poem_cpu --image docs/samples/风华正茂_original_test_02.jpg \
        --out docs/serve_page.png
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import time


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--image", required=True)
  ap.add_argument("--out", default="docs/serve_page.png")
  ap.add_argument("--alternatives", type=int, default=3)
  args = ap.parse_args(argv)
  import httpx
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  url = f"http://127.0.0.1:{port}"
  proc = subprocess.Popen([sys.executable, "-m", "crnn_jax.serve", "--workdir", args.workdir, "--port", str(port)])
  try:
    for _ in range(600):
      try:
        if httpx.get(url + "/readyz", timeout=2).status_code == 200:
          break
      except httpx.TransportError:
        pass
      time.sleep(1)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=900,620", "--hide-scrollbars"):
      opts.add_argument(a)
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
      d.get(url + "/")
      alt = d.find_element(By.ID, "alternatives")
      alt.clear()
      alt.send_keys(str(args.alternatives))
      d.find_element(By.ID, "file").send_keys(os.path.abspath(args.image))
      WebDriverWait(d, 120).until(lambda drv: "confidence" in drv.find_element(By.ID, "meta").text)
      d.save_screenshot(args.out)
      print(d.find_element(By.ID, "text").text, "|", d.find_element(By.ID, "meta").text)
    finally:
      d.quit()
  finally:
    proc.terminate()
    proc.wait(60)


if __name__ == "__main__":
  main()
