"""The OpenAI-compatible server, exercised through real HTTP clients (the `openai` package and httpx)."""

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import uvicorn

from nextn.engine.engine import Engine
from nextn.engine.params import SamplingParams
from nextn.server.app import create_app

KEY = "test-key"
ORIGIN = "http://chat.example.test"
PROMPTS = [f"def function_{i}(x):\n    return" for i in range(10)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny):
    model = str(tiny("qwen35"))
    engine = Engine(model=model, spec="mtp+ngram", ngram_min=1, n_parallel=8, ctx_size=192, prefill_chunk=64,
                    progress=False)
    port = _free_port()
    app = create_app(engine, api_key=KEY, cors_origins=[ORIGIN])
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "engine": engine, "model": model}
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def reference(server):
    """What `nextn generate` produces for each prompt: a separate engine, one request at a time."""
    engine = Engine(model=server["model"], spec="none", progress=False)
    return {p: engine.generate(p, SamplingParams(max_tokens=24, ignore_eos=True)).text for p in PROMPTS}


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=KEY, max_retries=0)


def _model_id(client):
    return client.models.list().data[0].id


def test_models_and_health(server, client):
    assert _model_id(client) == "qwen35-bundled"
    assert httpx.get(server["url"] + "/health").json() == {"status": "ok"}


def test_greedy_completion_matches_generate_with_and_without_mtp(client, reference):
    model = _model_id(client)
    drafted = []
    for prompt in PROMPTS[:3]:
        extra = {"ignore_eos": True}
        spec = client.completions.create(model=model, prompt=prompt, max_tokens=24, temperature=0, extra_body=extra)
        plain = client.completions.create(model=model, prompt=prompt, max_tokens=24, temperature=0,
                                          extra_body={**extra, "speculative": False})
        assert spec.choices[0].text == plain.choices[0].text == reference[prompt]
        assert spec.usage.completion_tokens == 24 and spec.choices[0].finish_reason == "length"
        timings = spec.model_extra["timings"]
        drafted.append(timings["draft_tokens"])
        assert timings["tokens_per_second"] > 0 and plain.model_extra["timings"]["draft_tokens"] == 0
    # the tuner measures drafting on the first request; on these random weights nothing is accepted, so later
    # requests draft only when its exploration (timing-driven) comes round
    assert drafted[0] > 0


def test_a_request_picks_its_drafters(client, reference):
    model = _model_id(client)
    for which in ("ngram", "mtp", "mtp+ngram"):
        out = client.completions.create(model=model, prompt=PROMPTS[0], max_tokens=24, temperature=0,
                                        extra_body={"ignore_eos": True, "speculative": which, "draft_max": 3})
        assert out.choices[0].text == reference[PROMPTS[0]]
        timings = out.model_extra["timings"]
        assert set(timings["drafters"]) <= set(which.split("+"))
        assert sum(d["draft_tokens"] for d in timings["drafters"].values()) == timings["draft_tokens"]


def test_streaming_equals_non_streaming(client, reference):
    model = _model_id(client)
    stream = client.completions.create(model=model, prompt=PROMPTS[3], max_tokens=24, temperature=0, stream=True,
                                       stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == reference[PROMPTS[3]]
    assert chunks[-1].usage.completion_tokens == 24
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_chat_completion_streaming_and_not(client):
    model = _model_id(client)
    msgs = [{"role": "user", "content": "Write a function."}]
    full = client.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0, seed=1,
                                          extra_body={"ignore_eos": True})
    parts = client.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0, stream=True,
                                           extra_body={"ignore_eos": True})
    chunks = list(parts)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == full.choices[0].message.content
    assert full.choices[0].message.role == "assistant"


def test_sampling_with_a_seed_is_reproducible(client):
    model = _model_id(client)
    a, b = (client.completions.create(model=model, prompt=PROMPTS[4], max_tokens=20, temperature=0.9, seed=7,
                                      extra_body={"ignore_eos": True}).choices[0].text for _ in range(2))
    assert a == b


def test_concurrent_requests_each_get_their_own_tokens(client, reference):
    model = _model_id(client)

    def one(i):
        prompt = PROMPTS[i % len(PROMPTS)]
        stream = i % 2 == 0
        if stream:
            out = client.completions.create(model=model, prompt=prompt, max_tokens=24, temperature=0, stream=True,
                                            extra_body={"ignore_eos": True, "draft_max": 1 + i % 3})
            return prompt, "".join(c.choices[0].text for c in out if c.choices)
        out = client.completions.create(model=model, prompt=prompt, max_tokens=24, temperature=0,
                                        extra_body={"ignore_eos": True})
        return prompt, out.choices[0].text

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(12)))
    for prompt, text in results:
        assert text == reference[prompt]


def test_client_disconnect_frees_the_slot(server):
    engine = server["engine"]
    body = {"prompt": PROMPTS[0], "max_tokens": 150, "temperature": 0, "stream": True, "ignore_eos": True}
    with httpx.Client(base_url=server["url"], headers={"Authorization": f"Bearer {KEY}"}) as http:
        with http.stream("POST", "/v1/completions", json=body, timeout=30) as resp:
            lines = resp.iter_lines()
            got = [next(lines) for _ in range(3)]
            assert got[0].startswith("data: ")
            assert len(engine.scheduler.active) == 1
    deadline = time.time() + 5
    while engine.scheduler.active and time.time() < deadline:
        time.sleep(0.02)
    assert not engine.scheduler.active and len(engine.scheduler.free_slots) == 8
    text = httpx.get(server["url"] + "/metrics").text
    assert 'status="cancelled"' in text


def test_metrics_expose_speculative_counters(server, client):
    client.completions.create(model=_model_id(client), prompt=PROMPTS[5], max_tokens=8, temperature=0)
    text = httpx.get(server["url"] + "/metrics").text
    for name in ("nextn:spec_decode_num_drafts_total", "nextn:spec_decode_num_draft_tokens_total",
                 "nextn:spec_decode_num_accepted_tokens_total", "nextn:generation_tokens_total",
                 'nextn:spec_decode_num_accepted_tokens_per_pos_total{position="0"}', "nextn:requests_total",
                 'nextn:spec_decode_drafter_num_draft_tokens_total{drafter="mtp"}'):
        assert name in text
    drafts = float(next(l.split()[-1] for l in text.splitlines() if l.startswith("nextn:spec_decode_num_drafts_total")))
    assert drafts > 0


@pytest.mark.parametrize("body,status,needle", [
    ({"prompt": "x", "temperature": -1}, 400, "temperature"),
    ({"prompt": "x", "n": 17}, 400, "'n' must be an integer in [1, 16]"),
    ({"prompt": "x", "n": 2, "best_of": 3}, 400, "'best_of' must be equal to 'n'"),
    ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": {"a": 1}}, 400, "prompt"),
    ({"prompt": [1, 2, 10**9]}, 400, "token ids"),
    ({"prompt": "x", "stop": 5}, 400, "stop"),
    ({"prompt": "x", "draft_max": -1}, 400, "draft_max"),
    ({"prompt": "x", "speculative": "draft"}, 400, "runs --spec mtp+ngram; draft is not available"),
    ({"prompt": "x", "speculative": "eagle"}, 400, "'speculative'"),
    ({"prompt": "x", "speculative": 3}, 400, "'speculative' must be"),
    ({"prompt": "x", "model": "gpt-4o"}, 404, "does not exist"),
    ({"prompt": "word " * 400}, 400, "context holds 192"),
    ({"prompt": "x", "seed": 2**70}, 400, "seed"),
    ({"prompt": "x", "seed": 1.5}, 400, "'seed' must be an integer"),
    ({"prompt": "x", "stream": "yes"}, 400, "'stream' must be a boolean"),
])
def test_bad_input_gets_an_openai_style_error(server, body, status, needle):
    r = httpx.post(server["url"] + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == status
    err = r.json()["error"]
    assert needle in err["message"] and err["type"]


def test_routes_answer_without_the_v1_prefix_too(server, reference):
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"prompt": PROMPTS[1], "max_tokens": 24, "temperature": 0, "ignore_eos": True}
    r = httpx.post(server["url"] + "/completions", json=body, headers=auth)
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == reference[PROMPTS[1]]
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    assert httpx.post(server["url"] + "/chat/completions", json=chat, headers=auth).status_code == 200
    assert httpx.get(server["url"] + "/models", headers=auth).json()["data"][0]["id"] == "qwen35-bundled"
    assert httpx.post(server["url"] + "/completions", json=body).status_code == 401      # the key guards them too


def test_cors_preflight_and_headers_for_the_allowed_origin_only(server):
    pre = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type"}
    r = httpx.options(server["url"] + "/v1/chat/completions", headers=pre)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    r = httpx.get(server["url"] + "/v1/models", headers={"Origin": ORIGIN, "Authorization": f"Bearer {KEY}"})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    r = httpx.get(server["url"] + "/v1/models", headers={"Origin": ORIGIN})            # 401 still readable
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.get(server["url"] + "/v1/models", headers={"Origin": "http://evil.test", "Authorization": f"Bearer {KEY}"})
    assert "access-control-allow-origin" not in other.headers


TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
TOOLS_TEMPLATE = ("{% if tools %}<|im_start|>system\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|im_end|>\n"
                  "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                  "{% endfor %}<|im_start|>assistant\n")


def test_tools_reach_the_template_or_are_refused(server, client):
    msgs = [{"role": "user", "content": "weather?"}]
    with pytest.raises(openai.BadRequestError) as err:          # the tiny model's template never mentions tools
        client.chat.completions.create(model=_model_id(client), messages=msgs, max_tokens=2, tools=[TOOL])
    assert "does not take tools" in err.value.body["message"]
    tk = server["engine"].tokenizer
    saved, tk.chat_template = tk.chat_template, TOOLS_TEMPLATE
    try:
        plain = client.chat.completions.create(model=_model_id(client), messages=msgs, max_tokens=2)
        offered = client.chat.completions.create(model=_model_id(client), messages=msgs, max_tokens=2, tools=[TOOL])
        declined = client.chat.completions.create(model=_model_id(client), messages=msgs, max_tokens=2, tools=[TOOL],
                                                  tool_choice="none")
        chunks = list(client.chat.completions.create(model=_model_id(client), messages=msgs, max_tokens=4,
                                                     tools=[TOOL], stream=True, temperature=0,
                                                     extra_body={"ignore_eos": True}))
    finally:
        tk.chat_template = saved
    assert offered.usage.prompt_tokens > plain.usage.prompt_tokens == declined.usage.prompt_tokens
    assert offered.choices[0].message.tool_calls is None         # a random model calls nothing: text as usual
    assert chunks[-1].choices[0].finish_reason == "length"


@pytest.mark.parametrize("extra,param", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string",
                                                                                       "pattern": "^a"}}}},
     "response_format"),
    ({"logit_bias": {"5": 10}}, "logit_bias"),
    ({"suffix": "end"}, "suffix"),
])
def test_unsupported_parameters_are_refused_not_ignored(client, extra, param):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=_model_id(client), messages=[{"role": "user", "content": "x"}],
                                       max_tokens=2, extra_body=extra)
    assert err.value.body["param"] == param and "not supported" in err.value.body["message"]


def test_invalid_json_and_missing_messages(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = httpx.post(server["url"] + "/v1/completions", content=b"{not json", headers=headers)
    assert r.status_code == 400 and "invalid JSON" in r.json()["error"]["message"]
    r = httpx.post(server["url"] + "/v1/chat/completions", json={"max_tokens": 3}, headers=headers)
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]


def test_wrong_api_key(server):
    bad = openai.OpenAI(base_url=server["url"] + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    r = httpx.post(server["url"] + "/v1/completions", json={"prompt": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server["url"] + "/health").status_code == 200


@pytest.mark.parametrize("path,body,needle", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "text parts"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role is 'wizard'"),
    ("/v1/completions", {"prompt": "\ud800 lone surrogate"}, "not valid Unicode"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "\udcff"}]}, "not valid Unicode"),
], ids=["text-part", "role", "surrogate", "chat-surrogate"])
def test_malformed_messages_are_400_not_500(server, path, body, needle):
    import json

    raw = json.dumps(body).encode()           # json.dumps escapes lone surrogates as \udXXX, as a client would
    r = httpx.post(server["url"] + path, content=raw,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 400 and needle in r.json()["error"]["message"]


def test_deeply_nested_json_and_unknown_routes_get_openai_errors(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = httpx.post(server["url"] + "/v1/completions", content=b"[" * 100000 + b"]" * 100000, headers=headers)
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"]
    for method, path, status in (("GET", "/v1/nothing", 404), ("GET", "/v1/completions", 405),
                                 ("POST", "/v1/models", 405), ("GET", "/v1/models/other-model", 404)):
        r = httpx.request(method, server["url"] + path, headers=headers)
        assert r.status_code == status and r.json()["error"]["message"] and r.json()["error"]["type"]
    model = httpx.get(server["url"] + "/v1/models", headers=headers).json()["data"][0]["id"]
    assert httpx.get(server["url"] + f"/v1/models/{model}", headers=headers).json()["id"] == model


def test_logprobs_are_the_same_with_and_without_speculation(client):
    model = _model_id(client)
    kw = dict(model=model, prompt=PROMPTS[6], max_tokens=24, temperature=0, logprobs=3)
    spec = client.completions.create(**kw, extra_body={"ignore_eos": True, "speculative": "mtp", "draft_max": 3})
    plain = client.completions.create(**kw, extra_body={"ignore_eos": True, "speculative": False})
    a, b = spec.choices[0].logprobs, plain.choices[0].logprobs
    # (whether this random model's drafts are tried depends on the adaptive tuner; the trained demo model's
    # accepted drafts are checked in test_speculative.py)
    assert a.token_logprobs == b.token_logprobs and a.tokens == b.tokens and a.top_logprobs == b.top_logprobs
    assert len(a.tokens) == 24 and "".join(a.tokens) == spec.choices[0].text
    for lp, top in zip(a.token_logprobs, a.top_logprobs):        # greedy: the chosen token is the most likely
        assert 1 <= len(top) <= 3 and lp <= 0 and abs(max(top.values()) - lp) < 1e-6   # keys: token text, may collide


def test_chat_logprobs_streaming_and_not(client):
    model = _model_id(client)
    kw = dict(model=model, messages=[{"role": "user", "content": "write a loop"}], max_tokens=16, temperature=0,
              logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True})
    whole = client.chat.completions.create(**kw)
    content = whole.choices[0].logprobs.content
    assert len(content) == 16 and all(len(c.top_logprobs) == 2 for c in content)
    raw = bytes(b for c in content for b in c.bytes)        # a random model's text may hold broken UTF-8
    assert raw.decode("utf-8", errors="replace") == whole.choices[0].message.content
    streamed = [c for chunk in client.chat.completions.create(**kw, stream=True) if chunk.choices
                for c in (chunk.choices[0].logprobs.content if chunk.choices[0].logprobs else [])]
    assert [(c.token, c.logprob) for c in streamed] == [(c.token, c.logprob) for c in content]
    plain = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], max_tokens=2)
    assert plain.choices[0].logprobs is None


@pytest.mark.parametrize("body,needle", [
    ({"prompt": "x", "logprobs": 50}, "'logprobs' must be an integer in [0, 20]"),
    ({"prompt": "x", "max_tokens": 0}, "0 only with 'echo' and 'logprobs'"),
])
def test_bad_logprobs_requests(server, body, needle):
    r = httpx.post(server["url"] + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and needle in r.json()["error"]["message"]
    r = httpx.post(server["url"] + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                   json={"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})
    assert r.status_code == 400 and "needs 'logprobs': true" in r.json()["error"]["message"]


def test_several_choices_per_request(client, reference):
    model = _model_id(client)
    greedy = client.completions.create(model=model, prompt=PROMPTS[2], max_tokens=24, temperature=0, n=2,
                                       extra_body={"ignore_eos": True})
    assert [c.index for c in greedy.choices] == [0, 1]
    assert [c.text for c in greedy.choices] == [reference[PROMPTS[2]]] * 2
    assert greedy.usage.completion_tokens == 48 and greedy.model_extra["timings"]["generated_tokens"] == 48
    kw = dict(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=12, temperature=1.0, seed=5, n=3)
    sampled = client.chat.completions.create(**kw)
    texts = [c.message.content for c in sampled.choices]
    assert len(set(texts)) > 1                          # each choice its own seed (5, 6, 7)
    assert [c.message.content for c in client.chat.completions.create(**kw).choices] == texts
    alone = [client.chat.completions.create(**{**kw, "n": 1, "seed": 5 + i}).choices[0].message.content
             for i in range(3)]
    assert alone == texts                               # one shared prefill, each choice as if alone
    streamed = ["", "", ""]
    for chunk in client.chat.completions.create(**kw, stream=True):
        for c in chunk.choices:
            streamed[c.index] += c.delta.content or ""
    assert streamed == texts


def test_echo_puts_the_prompt_before_the_completion(client, reference):
    out = client.completions.create(model=_model_id(client), prompt=PROMPTS[3], max_tokens=24, temperature=0,
                                    echo=True, extra_body={"ignore_eos": True})
    assert out.choices[0].text == PROMPTS[3] + reference[PROMPTS[3]]


def test_echo_with_logprobs_scores_the_prompt(server, client):
    import torch

    engine, model = server["engine"], _model_id(client)
    ids = engine.encode_prompt(PROMPTS[3])
    alone = client.completions.create(model=model, prompt=PROMPTS[3], max_tokens=0, echo=True, logprobs=2)
    lp = alone.choices[0].logprobs
    assert alone.choices[0].text == PROMPTS[3] and alone.usage.completion_tokens == 0
    assert len(lp.token_logprobs) == len(ids) and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    with torch.inference_mode():                      # teacher-forced logits of the same weights
        ref = engine.model.score(torch.tensor([ids]), chunk=64)[0].log_softmax(-1)
    assert lp.token_logprobs[1:] == pytest.approx([ref[j, ids[j + 1]].item() for j in range(len(ids) - 1)], abs=1e-4)
    assert all(1 <= len(top) <= 2 for top in lp.top_logprobs[1:])     # same-text tokens merge
    kw = dict(model=model, prompt=PROMPTS[3], max_tokens=5, echo=True, logprobs=1, temperature=0,
              extra_body={"ignore_eos": True})
    full = client.completions.create(**kw).choices[0].logprobs
    assert len(full.token_logprobs) == len(ids) + 5 and full.token_logprobs[1:len(ids)] == pytest.approx(lp.token_logprobs[1:])
    streamed = [x for chunk in client.completions.create(**kw, stream=True) if chunk.choices and chunk.choices[0].logprobs
                for x in chunk.choices[0].logprobs.token_logprobs]
    assert streamed[1:] == pytest.approx(full.token_logprobs[1:]) and streamed[0] is None


def test_stream_chunks_say_which_tokens_were_accepted_drafts(server):
    body = {"prompt": PROMPTS[4], "max_tokens": 24, "temperature": 0, "ignore_eos": True, "stream": True,
            "speculative": "mtp+ngram"}
    chunks = []
    with httpx.stream("POST", server["url"] + "/v1/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunks.append(__import__("json").loads(line[6:]))
    marks = [c["nextn"] for c in chunks]
    timings = chunks[-1]["timings"]
    assert sum(m["tokens"] for m in marks) == 24
    assert sum(m["accepted"] for m in marks) == timings["accepted_tokens"]
    assert sum(m["drafted"] for m in marks) == timings["draft_tokens"]
    assert all(m["accepted"] <= m["drafted"] and m["tokens"] <= m["accepted"] + 1 for m in marks)


def test_json_mode_replies_with_an_object(client):
    from nextn.text.json_mode import JsonPrefix

    out = client.chat.completions.create(model=_model_id(client), messages=[{"role": "user", "content": "json"}],
                                         max_tokens=40, temperature=0, response_format={"type": "json_object"})
    text = out.choices[0].message.content
    assert text.startswith("{") and JsonPrefix().feed(text.encode())
    if out.choices[0].finish_reason == "stop":
        assert isinstance(__import__("json").loads(text), dict)


def test_json_schema_replies_parse_into_the_callers_type(client):
    import pydantic

    class Verdict(pydantic.BaseModel):
        ok: bool
        score: int = pydantic.Field(ge=0, le=9)
        tags: list[str] = pydantic.Field(max_length=2)

    out = client.chat.completions.parse(model=_model_id(client), messages=[{"role": "user", "content": "verdict?"}],
                                        max_tokens=200, temperature=0, response_format=Verdict)
    assert out.choices[0].finish_reason == "stop"
    got = out.choices[0].message.parsed                   # the openai client validated it against Verdict
    assert isinstance(got, Verdict) and 0 <= got.score <= 9 and len(got.tags) <= 2
    llama_style = client.completions.create(model=_model_id(client), prompt="x", max_tokens=200, temperature=0,
                                            extra_body={"response_format": {"type": "json_object", "schema": {
                                                "type": "array", "items": {"type": "integer"}, "maxItems": 3}}})
    assert isinstance(__import__("json").loads(llama_style.choices[0].text), list)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=_model_id(client), messages=[{"role": "user", "content": "x"}],
                                       max_tokens=2, response_format={"type": "json_schema"})
    assert err.value.body["param"] == "response_format"
