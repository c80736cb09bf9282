"""The web page of crnn-serve, as a picture for the README: start the server on a workdir, open its
page in headless chromium, upload an image, wait for the text, save a screenshot.

    python tools/page_screenshot.py --workdir runs/poem_cpu --image docs/samples/风华正茂_original_test_02.jpg \
        --out docs/serve_page.png
"""
import argparse
import os
import shutil


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--image", required=True)
  ap.add_argument("--out", default="docs/serve_page.png")
  ap.add_argument("--alternatives", type=int, default=3)
  args = ap.parse_args(argv)
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  from crnn_jax import serve
  proc, url = serve.spawn("--workdir", args.workdir)
  try:
    serve.wait_ready(proc, url)
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
