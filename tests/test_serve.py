"""camtl-serve on a trained micro workdir: answers equal camtl-predict's for every task in one
request, bad requests get 4xx JSON naming the field while good ones from concurrent clients keep
being answered; (integration) a real server drains on SIGTERM, and the page works in Chromium."""
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from camtl_jax import predict, serve, workdir as workdir_lib

starlette_testclient = pytest.importorskip("starlette.testclient")
LIMITS = serve.Limits(max_inputs=8, max_body_bytes=4096, max_rows=16, row_buckets=(1, 4, 16))

GOOD = [
    {"task": "demo/sentiment", "text": "a wonderful film", "text_pair": "truly"},
    {"task": "demo/similarity", "text": "river stone bread", "text_pair": "river stone"},
    {"task": "demo/entities", "words": ["Anna", "lives", "in", "New", "York", "."]},
    {"task": "demo/choice", "premise": "Tom was hungry.", "choices": ["Tom ate.", "Tom slept."]},
    {"task": "demo/span", "question": "Where does Anna live?",
     "context": " ".join(f"Person{i} works in Paris." for i in range(12))
     + " Anna lives in Rome."},
]


@pytest.fixture(scope="module")
def trained(micro_workdir):
  return workdir_lib.load(micro_workdir)


@pytest.fixture(scope="module")
def served(micro_workdir):
  return serve.load_workdir(micro_workdir)


@pytest.fixture(scope="module")
def client(served):
  batcher = serve.Batcher(served, LIMITS)
  assert batcher.warm() == len(served.length_buckets) * len(LIMITS.row_buckets)
  batcher.start()
  with starlette_testclient.TestClient(serve.make_app(served, batcher, LIMITS)) as test_client:
    yield test_client
  batcher.stop()


def _expected(trained, record):
  task = trained.tasks[trained.task_id(record["task"])]
  example = predict.RECORD_READERS[task.type](record, "test", 1)
  return predict.predict(trained, task.name, [example])[0]


def _assert_same(got, want):
  for key, value in want.items():
    if key in ("probabilities", "value", "std", "score", "tag_probabilities"):
      flat = lambda x: list(x.values()) if isinstance(x, dict) else (  # noqa: E731
          x if isinstance(x, list) else [x])
      np.testing.assert_allclose(np.asarray(flat(got[key]), float),
                                 np.asarray(flat(value), float), atol=1e-4, err_msg=key)
    elif key != "id":
      assert got[key] == value, (key, got[key], value)


def test_one_request_every_task_answers_as_camtl_predict(client, trained):
  response = client.post("/v1/predict", json={"inputs": GOOD})
  assert response.status_code == 200, response.text
  body = response.json()
  assert [o["task"] for o in body["outputs"]] == [r["task"] for r in GOOD]
  assert [o["id"] for o in body["outputs"]] == list(range(len(GOOD)))
  for record, output in zip(GOOD, body["outputs"]):
    _assert_same(output, _expected(trained, record))
  assert body["outputs"][2]["words"] == GOOD[2]["words"]  # tags per word, no [CLS] / [SEP]
  assert body["outputs"][4]["windows"] > 1
  one = client.post("/v1/predict", json=GOOD[0]).json()  # one input object, no list
  assert one["outputs"][0]["label"] == body["outputs"][0]["label"]


def test_tasks_health_and_page(client):
  info = client.get("/v1/tasks").json()
  assert [t["name"] for t in info["tasks"]] == [r["task"] for r in GOOD]
  span = next(t for t in info["tasks"] if t["type"] == "span")
  assert [f["name"] for f in span["fields"]] == ["question", "context"]
  assert info["limits"]["max_inputs"] == 8
  assert client.get("/healthz").json()["status"] == "ok"
  page = client.get("/")
  assert page.status_code == 200 and "/v1/predict" in page.text
  assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere


def test_long_text_is_truncated_and_said(client):
  response = client.post("/v1/predict", json={"inputs": [
      {"task": "demo/sentiment", "text": " ".join(["wonderful"] * 100)}, GOOD[0]]})
  body = response.json()
  assert response.status_code == 200
  assert [o["truncated"] for o in body["outputs"]] == [True, False]
  assert body["warnings"] == ["inputs[0]: longer than 32 tokens, truncated"]


BAD = [  # (body, status, field, words in the message)
    (b'{"inputs": [', 400, "body", "malformed JSON"),
    (json.dumps({"inputs": [{"task": "glue/rte", "text": "x"}]}), 422, "inputs[0].task",
     "unknown task 'glue/rte'"),
    (json.dumps({"inputs": [{"text": "x"}]}), 422, "inputs[0].task", "missing"),
    (json.dumps({"inputs": [GOOD[0], {"task": "demo/sentiment"}]}), 422, "inputs[1].text",
     "missing field"),
    (json.dumps({"inputs": [{"task": "demo/sentiment", "text": 5}]}), 422, "inputs[0].text",
     "expected str"),
    (json.dumps({"inputs": [{"task": "demo/span", "question": "q", "context": "  "}]}), 422,
     "inputs[0].context", "empty text"),
    (json.dumps({"inputs": [{"task": "demo/choice", "choices": "ab"}]}), 422,
     "inputs[0].choices", "non-empty list"),
    (json.dumps({"inputs": [GOOD[0]] * 9}), 413, "inputs", "the limit is 8"),
    (json.dumps({"inputs": [{"task": "demo/sentiment", "text": "x" * 5000}]}), 413, "body",
     "the limit is 4096"),
    (json.dumps([1, 2]), 422, "inputs", "expected"),
    (json.dumps({"inputs": [{"task": "demo/choice", "choices": [["a", "b"]] * 3}]}), 422,
     "inputs[0].choices", "has 2 choices, got 3"),
]


@pytest.mark.parametrize("body,status,field,message", BAD, ids=[b[2] + ":" + b[3] for b in BAD])
def test_bad_requests_name_the_field(client, body, status, field, message):
  response = client.post("/v1/predict", content=body,
                         headers={"Content-Type": "application/json"})
  assert response.status_code == status, response.text
  error = response.json()["error"]
  assert error["field"] == field and message in error["message"], error


def test_concurrent_clients_bad_requests_between_good_ones(client, trained):
  """Eight clients at once, each sending good requests (one task, or all five mixed) with bad
  ones in between: every good answer is the one the same input gets alone."""
  alone = {r["task"]: client.post("/v1/predict", json=r).json()["outputs"][0] for r in GOOD}

  def session(k):
    checked = 0
    for i in range(6):
      if (k + i) % 3 == 0:
        body, status, field, _ = BAD[(k + i) % len(BAD)]
        response = client.post("/v1/predict", content=body,
                               headers={"Content-Type": "application/json"})
        assert response.status_code == status and response.json()["error"]["field"] == field
        continue
      inputs = GOOD if (k + i) % 3 == 1 else [GOOD[(k + i) % len(GOOD)]]
      response = client.post("/v1/predict", json={"inputs": inputs})
      assert response.status_code == 200, response.text
      for record, output in zip(inputs, response.json()["outputs"]):
        _assert_same(output, {k2: v for k2, v in alone[record["task"]].items() if k2 != "id"})
        checked += 1
    return checked

  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    checked = sum(pool.map(session, range(8)))
  assert checked >= 40
  assert client.get("/healthz").json()["batches"] > 0


def test_inputs_encoded_on_many_threads_at_once_equal_those_encoded_alone(served):
  """The server encodes requests on its worker threads, all through one fast tokenizer whose
  truncation and stride each call sets: a span task's windows beside a sentence task's must come
  out as they do alone (without serve's tokenizer lock 53 of 4,000 encodings differed)."""
  def encoded(i):
    body = json.dumps({"inputs": [GOOD[i % len(GOOD)]]}).encode()
    return serve.encode(served, serve.parse_body(body, served, LIMITS)[0]).split.arrays
  alone = [encoded(i) for i in range(len(GOOD))]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    for i, arrays in enumerate(pool.map(encoded, range(4000))):
      for key, want in alone[i % len(GOOD)].items():
        np.testing.assert_array_equal(arrays[key], want, err_msg=f"{GOOD[i % len(GOOD)]} {key}")


# ------------------------------------------------------------------------------------------------
# A real server (integration)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start_server(model_dir, port, *flags):
  cmd = [sys.executable, "-m", "camtl_jax.cli.serve", "--model", str(model_dir), "--port",
         str(port), "--row-buckets", "1,4,16", *flags]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  line = proc.stdout.readline()  # the ready line, printed once every program is compiled
  assert "ready on http://127.0.0.1:" in line, line
  return proc


@pytest.fixture(scope="module")
def server(micro_workdir):
  port = _free_port()
  proc = _start_server(micro_workdir, port)
  yield f"http://127.0.0.1:{port}", proc
  if proc.poll() is None:
    proc.kill()
    proc.wait()


@pytest.mark.integration
def test_sigterm_drains_requests_in_flight_and_exits_0(micro_workdir):
  """Eight one-row requests wait in a batch held open for 3 s; SIGTERM arrives meanwhile: every
  one is answered, then the server exits 0."""
  import httpx
  port = _free_port()
  proc = _start_server(micro_workdir, port, "--max-wait-ms", "3000")
  url = f"http://127.0.0.1:{port}/v1/predict"
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    futures = [pool.submit(httpx.post, url, json=GOOD[0], timeout=120) for _ in range(8)]
    time.sleep(1.0)
    assert not any(f.done() for f in futures)  # all in flight
    proc.send_signal(signal.SIGTERM)
    responses = [f.result() for f in futures]
  assert proc.wait(timeout=120) == 0
  assert [r.status_code for r in responses] == [200] * 8
  assert all(r.json()["outputs"][0]["task"] == "demo/sentiment" for r in responses)


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run")


@pytest.mark.integration
def test_page_answers_every_task_in_chromium(server, trained):
  """Types each task's fields into the page, clicks Predict and reads the answer back."""
  webdriver = pytest.importorskip("selenium.webdriver")
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import Select, WebDriverWait
  binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
  if not (binary and driver_path):
    pytest.skip("chromium / chromium-driver not installed (apt-get install chromium "
                "chromium-driver)")
  url, _ = server
  options = webdriver.ChromeOptions()
  options.binary_location = binary
  for flag in CHROMIUM_FLAGS:
    options.add_argument(flag)
  browser = webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)
  try:
    browser.get(url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))

    def ask(record):
      Select(browser.find_element(By.ID, "task")).select_by_value(record["task"])
      fields = {k: v for k, v in record.items() if k != "task"}
      if "choices" in fields:
        fields.update({f"choice-{i}": c for i, c in enumerate(fields.pop("choices"))})
      if "words" in fields:
        fields["text"] = " ".join(fields.pop("words"))
      for name, value in fields.items():
        box = browser.find_element(By.ID, f"field-{name}")
        box.clear()
        box.send_keys(value)
      browser.find_element(By.ID, "run").click()
      wait.until(lambda b: b.find_element(By.ID, "answer").get_attribute("data-task")
                 == record["task"])
      return browser.find_element(By.ID, "answer")

    want = {r["task"]: _expected(trained, r) for r in GOOD}
    answer = ask(GOOD[0])
    assert f"Label: {want['demo/sentiment']['label']}" in answer.text
    assert len(answer.find_elements(By.CSS_SELECTOR, "#probabilities .row")) == 2
    assert f"{want['demo/similarity']['value']:.3f}" in ask(GOOD[1]).text
    tags = ask(GOOD[2]).find_elements(By.CSS_SELECTOR, "#tags .tag")
    assert [t.text for t in tags] == want["demo/entities"]["tags"]
    chosen = GOOD[3]["choices"][want["demo/choice"]["choice"]]
    assert f"Chosen: {chosen}" in ask(GOOD[3]).text
    span = ask(GOOD[4])
    assert f"Answer: {want['demo/span']['answer'] or '(none)'}" in span.text
    if want["demo/span"]["answer"]:
      assert span.find_element(By.CSS_SELECTOR, "#context mark").text == want[
          "demo/span"]["answer"]
    # A bad input shows the server's error naming the field.
    Select(browser.find_element(By.ID, "task")).select_by_value("demo/sentiment")
    browser.find_element(By.ID, "run").click()
    wait.until(lambda b: b.find_element(By.ID, "error").text)
    assert "inputs[0].text" in browser.find_element(By.ID, "error").text
  finally:
    browser.quit()
