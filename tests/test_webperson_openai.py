"""WebPerson: the OpenAI-compatible backend (and the built-in URL downloader) against a small
chat-completions server on 127.0.0.1, with errors, timeouts, retries and bounded request counts."""

from __future__ import annotations

import base64
import io
import json
import shutil
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from dataset_builders.webperson import cli, retry
from dataset_builders.webperson.images import encode_jpeg
from dataset_builders.webperson.captioning import sampling_seed
from dataset_builders.webperson.ingest import ingest
from dataset_builders.webperson.openai_client import EndpointError, OpenAIChatClient
from dataset_builders.webperson.pipeline import run_caption, run_detect
from dataset_builders.webperson.shards import StageStore
from dataset_builders.webperson.sources import folder_source, url_source
from dataset_builders.webperson.template_bank import load_bank
from dataset_builders.webperson.vlm import OpenAICaptioner
from dataset_builders.webperson.testing import InstantDetector


class ChatServer:
    """A chat-completions server on 127.0.0.1 whose behaviour per request is ``script(body, n)``:
    ``n`` counts the requests with the same last text and seed; it returns ``(status, payload, delay)``."""

    def __init__(self, script):
        self.script = script
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.counts: Counter = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # images for the URL downloader
                status, payload, delay = server.script({"path": self.path}, 0)
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                content = body["messages"][-1]["content"]
                text = content if isinstance(content, str) else content[-1]["text"]
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    key = (text, body.get("seed"))
                    server.counts[key] += 1
                    n = server.counts[key]
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, payload, delay = server.script(body, n)
                    time.sleep(delay)
                    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def answer(text):
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
    }


def client(url, **kw):
    kw.setdefault("backoff", 0.01)
    return OpenAIChatClient(url, "tiny-vlm", **kw)


def msg(text):
    return [{"role": "user", "content": text}]


def test_success_sends_the_protocol_fields():
    with ChatServer(lambda body, n: (200, answer("a man in red"), 0)) as server:
        c = client(server.url, api_key="secret")
        assert c.complete(msg("hello"), temperature=0.5, max_tokens=7, seed=3) == "a man in red"
    body, headers = server.requests[0], server.headers[0]
    assert (
        body["model"] == "tiny-vlm"
        and body["temperature"] == 0.5
        and body["max_tokens"] == 7
        and body["seed"] == 3
    )
    assert headers["Authorization"] == "Bearer secret"
    assert c.stats == Counter({"requests": 1})


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_retries_on_server_errors_then_succeeds(status):
    with ChatServer(
        lambda body, n: (status, {"error": "busy"}, 0) if n <= 2 else (200, answer("ok"), 0)
    ) as server:
        c = client(server.url, max_retries=3)
        assert c.complete(msg("x")) == "ok"
    assert len(server.requests) == 3 and c.stats["retries"] == 2


def test_retry_after_is_honoured_else_exponential_backoff(monkeypatch):
    delays, main = [], threading.current_thread()
    sleep = time.sleep
    # the server threads sleep too (0 s per reply): only the client's waits are recorded
    monkeypatch.setattr(
        retry.time, "sleep", lambda s: delays.append(s) if threading.current_thread() is main else sleep(s)
    )
    for status in (429, 503):  # the server sends "Retry-After: 0" with 429 only
        with ChatServer(
            lambda body, n: (status, {"error": "busy"}, 0) if n <= 3 else (200, answer("ok"), 0)
        ) as server:
            c = client(server.url, max_retries=3, backoff=0.25, max_backoff=0.6)
            assert c.complete(msg("x")) == "ok"
        assert c.stats == Counter({"requests": 4, "retries": 3})
    assert delays == pytest.approx([0, 0, 0, 0.25, 0.5, 0.6])  # doubling, capped at max_backoff


def test_gives_up_after_max_retries():
    with ChatServer(lambda body, n: (503, {"error": "down"}, 0)) as server:
        c = client(server.url, max_retries=2)
        with pytest.raises(EndpointError) as info:
            c.complete(msg("x"))
    assert info.value.kind == "http_503" and info.value.attempts == 3
    assert len(server.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 404])
def test_client_errors_are_not_retried(status):
    with ChatServer(lambda body, n: (status, {"error": "bad"}, 0)) as server:
        with pytest.raises(EndpointError) as info:
            client(server.url, max_retries=5).complete(msg("x"))
    assert info.value.kind == f"http_{status}" and len(server.requests) == 1


def test_malformed_answers_fail_without_retry():
    replies = iter([(200, b"not json", 0), (200, {"choices": []}, 0), (200, answer(None), 0)])
    with ChatServer(lambda body, n: next(replies)) as server:
        c = client(server.url, max_retries=5)
        for _ in range(3):
            with pytest.raises(EndpointError) as info:
                c.complete(msg(f"x{_}"))
            assert info.value.kind == "bad_response"
    assert len(server.requests) == 3


def test_timeout_then_retry_succeeds():
    with ChatServer(
        lambda body, n: (200, answer("late"), 1.0) if n == 1 else (200, answer("fast"), 0)
    ) as server:
        c = client(server.url, timeout=0.3, max_retries=2)
        start = time.perf_counter()
        assert c.complete(msg("x")) == "fast"
        assert time.perf_counter() - start < 1.0
    assert len(server.requests) == 2


def test_timeout_for_good():
    with ChatServer(lambda body, n: (200, answer("late"), 0.6)) as server:
        with pytest.raises(EndpointError) as info:
            client(server.url, timeout=0.2, max_retries=1).complete(msg("x"))
    assert info.value.kind == "timeout" and info.value.attempts == 2


def test_connection_refused():
    with ChatServer(lambda body, n: (200, answer("x"), 0)) as server:
        url = server.url
    with pytest.raises(EndpointError) as info:  # the server is closed now
        client(url, max_retries=1, timeout=1).complete(msg("x"))
    assert info.value.kind == "connection" and info.value.attempts == 2


def test_concurrency_is_bounded_and_order_kept():
    with ChatServer(lambda body, n: (200, answer(body["messages"][0]["content"].upper()), 0.05)) as server:
        c = client(server.url, concurrency=4)
        results = c.complete_many([msg(f"q{i}") for i in range(20)])
    assert results == [f"Q{i}" for i in range(20)]
    assert 2 <= server.max_in_flight <= 4
    assert len(server.requests) == 20


def test_complete_many_returns_errors_in_place():
    def script(body, n):
        return (
            (400, {"error": "no"}, 0) if body["messages"][0]["content"] == "q1" else (200, answer("fine"), 0)
        )

    with ChatServer(script) as server:
        results = client(server.url, concurrency=3).complete_many([msg("q0"), msg("q1"), msg("q2")])
    assert results[0] == results[2] == "fine" and isinstance(results[1], EndpointError)


def _crop_work(tmp_path, count=6):
    pool = tmp_path / "pool"
    pool.mkdir()
    for k in range(count):
        image = Image.effect_noise((200, 320), 30 + k).convert("RGB")
        (pool / f"{k}.jpg").write_bytes(encode_jpeg(image, 90))
    work = tmp_path / "work"
    ingest(folder_source(pool), work, shard_size=4, progress=False)
    run_detect(work, InstantDetector(), progress=False)
    return work


def test_caption_stage_through_the_endpoint(tmp_path):
    work = _crop_work(tmp_path)
    crops = StageStore(work, "detect")
    bad_crop = crops.read("00000").column("crop_id")[1].as_py()
    bad_size = len(crops.read("00000").column("crop")[1].as_py())

    def script(body, n):
        content = body["messages"][0]["content"]
        image = base64.b64decode(content[0]["image_url"]["url"].split(",", 1)[1])
        Image.open(io.BytesIO(image)).verify()  # a real JPEG arrived
        if len(image) == bad_size:
            return 500, {"error": "model crashed"}, 0
        if n == 1 and body["seed"] % 3 == 0:
            return 503, {"error": "warming up"}, 0
        return 200, answer(f"  \"A person in a blue coat number {body['seed']}\" "), 0

    with ChatServer(script) as server:
        spec = f"openai=tiny-vlm,base_url={server.url},concurrency=3,retries=2,backoff=0.01,timeout=5"
        from dataset_builders.webperson.backends import make_captioner, parse_spec

        captioner = make_captioner(parse_spec(spec, "--captioner"))
        manifest = run_caption(
            work, [captioner], load_bank(), from_stage="detect", batch_size=4, progress=False
        )
    assert manifest["in"] == 6 and manifest["kept"] == 5 and manifest["rejected"] == {"caption_error": 1}
    rejects = [
        r for n in StageStore(work, "caption").done_names() for r in StageStore(work, "caption").rejections(n)
    ]
    assert rejects[0]["id"] == bad_crop and "endpoint_http_500" in rejects[0]["detail"]
    # 2 captions per crop; both captions of the bad crop take 3 attempts (retries=2); every other
    # caption whose seed is a multiple of 3 takes 2 (one 503 first)
    ids = [i for n in crops.done_names() for i in crops.read(n).column("crop_id").to_pylist()]
    warmups = sum(1 for i in ids if i != bad_crop for j in (0, 1) if sampling_seed(0, i, j) % 3 == 0)
    assert len(server.requests) == 2 * 6 + 2 * 2 + warmups
    kept = StageStore(work, "caption").read("00000").to_pylist()
    assert all(r["captioner1"] == r["captioner2"] == "openai:tiny-vlm" for r in kept)
    assert all(r["caption1"] != r["caption2"] for r in kept)  # two samplings: different seeds
    assert {body["seed"] for body in server.requests} == {sampling_seed(0, i, j) for i in ids for j in (0, 1)}
    prompts = [body["messages"][0]["content"][1]["text"] for body in server.requests]
    assert all("Output only the caption" in p for p in prompts)


def test_templates_extract_cli_through_the_endpoint(tmp_path, capsys):
    captions = tmp_path / "reid_raw.json"
    captions.write_text(
        json.dumps(
            [
                {"captions": ["A man in a red shirt.", "A woman in a blue dress."]},
                {"captions": ["A man in a red shirt."]},
            ]
        )
    )

    def script(body, n):
        text = body["messages"][0]["content"]
        if "blue dress" in text:
            return 200, answer("[He/She] wears a [colored dress]."), 0
        return 200, answer("Template: [He/She] wears a [colored top]."), 0

    with ChatServer(script) as server:
        out = tmp_path / "templates.txt"
        code = cli.main(
            [
                "templates-extract",
                "--captions",
                str(captions),
                "--llm",
                f"openai=tiny-llm,base_url={server.url}",
                "--out",
                str(out),
            ]
        )
    assert code == 0
    assert out.read_text().splitlines() == [
        "[He/She] wears a [colored top].",
        "[He/She] wears a [colored dress].",
    ]
    assert "duplicate" in capsys.readouterr().out
    assert len(server.requests) == 3


def test_url_downloader_counts_failures(tmp_path):
    jpeg = encode_jpeg(Image.effect_noise((200, 300), 30).convert("RGB"), 90)

    def script(request, n):
        return {
            "/ok.jpg": (200, jpeg, 0),
            "/missing.jpg": (404, b"", 0),
            "/slow.jpg": (200, jpeg, 1.0),
            "/flaky.jpg": (500, b"", 0),
        }[request["path"]]

    with ChatServer(script) as server:
        base = server.url.rsplit("/v1", 1)[0]
        urls = tmp_path / "urls.txt"
        urls.write_text(
            f"# pool\n{base}/ok.jpg\n{base}/missing.jpg\n\n{base}/slow.jpg\n{base}/flaky.jpg\n"
            f"not-a-url\n{base}/ok.jpg\n"
        )
        manifest = ingest(
            url_source(urls, timeout=0.3, retries=1), tmp_path / "work", shard_size=10, progress=False
        )
    assert manifest["in"] == 6 and manifest["kept"] == 1
    assert manifest["rejected"] == {"download_failed": 4, "duplicate": 1}
    store = StageStore(tmp_path / "work", "ingest")
    row = store.read("00000").to_pylist()[0]
    assert row["source_url"].endswith("/ok.jpg") and row["image"] == jpeg


def test_caption_errors_are_retried_into_the_same_shard(tmp_path):
    work = _crop_work(tmp_path)
    reference = tmp_path / "reference"
    shutil.copytree(work, reference)
    crops = StageStore(work, "detect")
    failing = set(crops.read("00000").column("crop_id").to_pylist()[1:3])
    sizes = {len(c) for c in crops.read("00000").column("crop").to_pylist()[1:3]}
    state = {"down": True}

    def script(body, n):
        image = base64.b64decode(body["messages"][0]["content"][0]["image_url"]["url"].split(",", 1)[1])
        if state["down"] and len(image) in sizes:
            return 503, {"error": "overloaded"}, 0
        return 200, answer(f"A person in a blue coat with black jeans, sample {body['seed']}"), 0

    with ChatServer(script) as server:
        captioner = OpenAICaptioner(client(server.url, max_retries=1, concurrency=2))
        first = run_caption(work, [captioner], load_bank(), from_stage="detect", progress=False)
        assert first["rejected"] == {"caption_error": 2} and first["kept"] == 4
        requests_before = len(server.requests)
        state["down"] = False
        second = run_caption(
            work, [captioner], load_bank(), from_stage="detect", progress=False, retry_errors=True
        )
        assert second["retried_now"] == 2 and second["kept"] == 6 and second["rejected"] == {}
        assert len(server.requests) - requests_before == 2 * 2  # only the failed crops, two captions each
        again = run_caption(
            work, [captioner], load_bank(), from_stage="detect", progress=False, retry_errors=True
        )
        assert again["retried_now"] == 0 and len(server.requests) - requests_before == 4
        run_caption(reference, [captioner], load_bank(), from_stage="detect", progress=False)
    for name in StageStore(reference, "caption").done_names():
        assert StageStore(work, "caption").read(name).equals(StageStore(reference, "caption").read(name))
        assert StageStore(work, "caption").rejections(name) == []
    assert StageStore(work, "caption").marker("00000")["retried"] == 2
    assert failing <= set(StageStore(work, "caption").read("00000").column("crop_id").to_pylist())
