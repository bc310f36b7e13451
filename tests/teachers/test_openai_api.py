"""The `openai` backend against real HTTP servers on 127.0.0.1: the fake, and `transformers serve`."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fake_openai import FakeOpenAIServer

from rmsd.config.pools import OpenAIOptions
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.teachers.openai_api import DUMMY_KEY, OpenAITeacher
from rmsd.teachers.teacher import GenParams, Media, TeacherError

ITEM = Item(item_id="q1", benchmark="t", task_type="mcq", question="Which colour?", prompt="Which colour? (A) red (B) blue",
            options=["red", "blue"])
MEDIA = Media(jpeg_b64=["AAAA", "BBBB", "CCCC"], timestamps=[0.5, 1.5, 2.5], duration=3.0)


def teacher(url: str | list[str], **options) -> OpenAITeacher:
    return OpenAITeacher("t", OpenAIOptions(model="fake-vlm", base_url=url, **options), timeout_s=5.0)


def run(coro):
    return asyncio.run(coro)


async def _generate(t: OpenAITeacher, n: int, params: GenParams = GenParams(), start: int = 0, media: Media = MEDIA):
    try:
        return await t.generate(ITEM, media, n, params, start_index=start)
    finally:
        await t.aclose()


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def test_messages_carry_frames_with_their_times_or_a_video_url():
    t = teacher("http://127.0.0.1:9/v1", image_detail="high")
    t.system_prompt, t.prompt_template = "Be brief.", "Question: {prompt}"
    system, user = t.messages(ITEM, MEDIA)
    assert system == {"role": "system", "content": "Be brief."}
    parts = user["content"]
    assert parts[0] == {"type": "text", "text": "3 frames of a 3.0 s video, at t = 0.5, 1.5, 2.5 s:"}
    assert [p["image_url"] for p in parts[1:4]] == [
        {"url": f"data:image/jpeg;base64,{b}", "detail": "high"} for b in MEDIA.jpeg_b64]
    assert parts[-1] == {"type": "text", "text": "Question: " + ITEM.prompt}
    v = teacher("http://127.0.0.1:9/v1", video_mode="video_url")
    assert v.media_needs == frozenset({"video"})
    item = Item(**{**ITEM.to_dict(), "video": "/data/clip.mp4"})
    (user,) = v.messages(item, Media(video_b64="VVVV"))
    assert user["content"][0] == {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,VVVV"}}
    assert v.messages(ITEM, Media()) == [{"role": "user", "content": ITEM.prompt}]  # text-only item


def test_n_in_one_request_sends_the_video_once(server):
    server.reset(honour_n=True)
    t = teacher(server.url)
    out = run(_generate(t, 4))
    assert len(out) == 4 and len({r.text for r in out}) == 4
    assert server.stats.requests == 1 and server.stats.image_parts == 3 and t.n_honoured is True
    # billed usage is split over the records: their sum is the bill, not K times it
    assert sum(r.prompt_tokens for r in out) == server.stats.prompt_tokens
    assert sum(r.completion_tokens for r in out) == server.stats.completion_tokens


def test_a_server_that_ignores_n_is_detected_and_one_request_returns_what_it_got(server):
    server.reset(honour_n=False)
    t = teacher(server.url)
    assert t.max_n_per_request() is None
    out = run(_generate(t, 4, GenParams(seed=7)))
    # one generate = one HTTP request: the one choice received comes back, the runner asks for the rest
    assert len(out) == 1 and t.n_honoured is False and t.max_n_per_request() == 1
    assert server.stats.requests == 1 and server.stats.n_asked == [4]
    singles = [run(_generate(teacher(server.url, use_n="never"), 1, GenParams(seed=7), start=i))[0] for i in range(4)]
    assert singles[0].text == out[0].text  # sample 0 is the same text whichever request asked for it
    assert len({r.text for r in singles}) == 4  # seed + sample index: separate requests do not repeat one sample


def test_without_aiohttp_the_default_httpx_transport_serves(server, monkeypatch):
    import openai

    def missing(**kw):
        raise RuntimeError("To use the aiohttp client you must have installed the package with the `aiohttp` extra")

    monkeypatch.setattr(openai, "DefaultAioHttpClient", missing)
    server.reset()
    t = teacher(server.url)
    assert all(type(c._client).__name__ != "_InstalledAioHttpClient" for _, c in t._routes)
    assert len(run(_generate(t, 2))) == 2 and server.stats.requests == 1


def test_logprobs_and_length_cut_are_kept(server):
    server.reset(honour_n=True)
    out = run(_generate(teacher(server.url, logprobs=True, top_logprobs=2), 2, GenParams(max_tokens=5)))
    assert all(r.finish_reason == "length" and len(r.text.split(" ")) == 5 for r in out)
    lp = out[0].logprobs
    assert len(lp) == 5 and set(lp[0]) == {"token", "logprob", "top_logprobs"} and len(lp[0]["top_logprobs"]) == 2
    assert sum(r.completion_tokens for r in out) == 10
    assert run(_generate(teacher(server.url), 1))[0].logprobs is None  # not requested, not stored


@pytest.mark.parametrize("fault, retryable, match", [
    ("429", True, "HTTP 429"), ("500", True, "HTTP 500"), ("garbage", True, "malformed response"),
    ("empty", True, "no choices"),
])
def test_faults_become_teacher_errors_the_runner_understands(server, fault, retryable, match):
    server.reset(faults=[fault], retry_after_s=1.5)
    with pytest.raises(TeacherError, match=match) as e:
        run(_generate(teacher(server.url), 2))
    assert e.value.retryable is retryable
    if fault == "429":
        assert e.value.retry_after == pytest.approx(1.5)


def test_timeouts_and_unreachable_servers_are_retryable(server):
    server.reset(faults=["hang"], hang_s=3.0)
    with pytest.raises(TeacherError, match="timeout") as e:
        run(_generate(OpenAITeacher("t", OpenAIOptions(model="m", base_url=server.url), timeout_s=0.3), 1))
    assert e.value.retryable
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with pytest.raises(TeacherError, match="cannot reach") as e:
        run(_generate(teacher(dead), 1))
    assert e.value.retryable


def test_keys_come_from_the_environment_and_are_redacted(server, monkeypatch):
    monkeypatch.delenv("FAKE_TEST_KEY", raising=False)
    with pytest.raises(RmsdError, match="FAKE_TEST_KEY is not set"):
        teacher("https://api.example.com/v1", api_key_env="FAKE_TEST_KEY")
    assert teacher(["http://127.0.0.1:9/v1", "http://gpu-node-3:8000/v1", "http://10.1.2.3/v1"],
                   api_key_env="FAKE_TEST_KEY")._key == DUMMY_KEY  # local servers need no key
    secret = "sk-test-SECRET-0123456789abcdef"
    monkeypatch.setenv("FAKE_TEST_KEY", secret)
    server.reset(require_key="the-right-key")  # a 401 that echoes the key it received
    t = teacher(server.url, api_key_env="FAKE_TEST_KEY")
    with pytest.raises(TeacherError) as e:
        run(_generate(t, 1))
    assert "HTTP 401" in str(e.value) and secret not in str(e.value) and "***" in str(e.value)
    assert not e.value.retryable and secret not in repr(t)
    server.reset(require_key=secret)
    assert len(run(_generate(teacher(server.url, api_key_env="FAKE_TEST_KEY"), 1))) == 1


def test_several_base_urls_share_the_load_and_ask_is_text_only():
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        t = teacher([a.url, b.url])
        t.system_prompt = "pool system prompt"

        async def go():
            await asyncio.gather(*(t.generate(ITEM, MEDIA, 1, GenParams()) for _ in range(6)))
            answer = await t.ask("Is 2 > 1? Answer yes or no.")
            await t.aclose()
            return answer

        answer = run(go())
        assert a.stats.requests + b.stats.requests == 7 and min(a.stats.requests, b.stats.requests) >= 3
        assert "<answer>" in answer
        assert t.system_prompt == "pool system prompt"


# ----------------------------------------------------------------------------- transformers serve
def _build_text_model(out: Path) -> None:
    """A 1-layer Llama with a byte-level BPE trained here: serves offline in seconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(["<think>the red square moves left</think><answer>(A)</answer>"], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>")
    fast.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] if m['content'] is string else "
                          "m['content'] | map(attribute='text') | join(' ') }}\n{% endfor %}"
                          "{% if add_generation_prompt %}assistant: {% endif %}")
    fast.save_pretrained(out)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                                 bos_token_id=1, eos_token_id=2, pad_token_id=2)).save_pretrained(out)
    GenerationConfig(do_sample=True, max_new_tokens=16, bos_token_id=1, eos_token_id=2,
                     pad_token_id=2).save_pretrained(out)


def test_transformers_serve_ignores_n_and_logprobs_and_is_detected(tmp_path):
    exe = Path(sys.executable).parent / "transformers"
    if not exe.exists():
        pytest.skip("the transformers CLI is not installed")
    _build_text_model(tmp_path / "model")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    proc = subprocess.Popen([str(exe), "serve", str(tmp_path / "model"), "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120  # a loaded 2-core machine starts it slowly
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"transformers serve did not start: {proc.stderr.read().decode()[-300:]}")
            time.sleep(0.5)
        t = OpenAITeacher("serve", OpenAIOptions(model=str(tmp_path / "model"), base_url=f"http://127.0.0.1:{port}/v1",
                                                 logprobs=True, top_logprobs=2), timeout_s=60)
        out = run(_generate(t, 3, GenParams(max_tokens=8), media=Media()))
        assert len(out) == 1 and t.n_honoured is False and t.max_n_per_request() == 1  # the runner asks for the rest
        assert all(r.logprobs is None and r.completion_tokens > 0 for r in out)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# ----------------------------------------------------------------------------- the key never leaks
def test_the_api_key_never_reaches_a_file_or_the_output(tmp_path):
    import yaml

    from rmsd.synthvid.generator import generate

    generate(tmp_path / "data", n=6, seed=0, frame_size=56)
    secret = "sk-leaktest-" + "Zq9" * 10
    with FakeOpenAIServer(require_key=secret) as good, FakeOpenAIServer(require_key="another-key") as echoing:
        pool = {"name": "leak", "teachers": [
            {"name": "ok", "backend": "openai", "samples": 2, "openai": {"model": "m", "base_url": good.url,
                                                                        "api_key_env": "LEAK_TEST_KEY"}},
            {"name": "rejected", "backend": "openai", "samples": 2, "max_retries": 1,
             "openai": {"model": "m", "base_url": echoing.url, "api_key_env": "LEAK_TEST_KEY"}}]}
        recipe = {"name": "leak", "dataset": {"benchmark": "synthvid", "path": str(tmp_path / "data"), "num_frames": 2},
                  "pool": str(tmp_path / "pool.yaml"), "student": {"build": "tiny"}}
        (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool))
        (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        run = subprocess.run([sys.executable, "-m", "rmsd.cli", "sample", "--recipe", str(tmp_path / "recipe.yaml"),
                              "--out", str(tmp_path / "store")], env={**os.environ, "LEAK_TEST_KEY": secret},
                             capture_output=True, timeout=120)
        echoed = echoing.stats.statuses.get("401", 0)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output.decode()[-2000:]
    assert echoed > 0 and good.stats.ok > 0  # the key was sent, and one server echoed it back in its error
    files = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"summary.json", "failures.jsonl", "README.md"}
    assert b"HTTP 401" in (tmp_path / "store" / "failures.jsonl").read_bytes()
    for p in files:
        assert secret.encode() not in p.read_bytes(), p
    assert secret.encode() not in output
