"""JSON mode: the automaton accepts exactly the prefixes of one JSON object, and constrained decoding
keeps replies valid, greedy output identical with and without speculation."""

from __future__ import annotations

import json

import pytest

from nextn.engine.engine import Engine
from nextn.engine.params import SamplingParams
from nextn.engine.sequence import SpecConfig
from nextn.text.json_mode import MAX_WS, JsonPrefix

VALID = ['{"a": 1}', '{"a": [1, 2.5e-3, -0, 1E+2, true, false, null, "x\\n\\u00e9", {}]}', '{}', '{"a":{"b":[]}}',
         '{"k" : "v" ,\n  "n": -12.5}', '{"\\"q\\"": "caf\\u00e9 ☕"}']
INVALID = ['[1]', ' {}', '{"a" 1}', '{"a": 01}', '{"a": tru}', '{"a": 1,}', '{a:1}', '{"a":1}}', '{"a":"\x01"}',
           '{"a": 1.}', '{"a": 1} ', '{"a": .5}', '{"a": "\\x"}', '{"a": [1,]}', '{"a":' + " " * (MAX_WS + 1) + '1}']


@pytest.mark.parametrize("text", VALID)
def test_valid_objects_are_accepted_whole_and_as_every_prefix(text):
    data = text.encode()
    for n in range(len(data)):
        p = JsonPrefix()
        assert p.feed(data[:n]) and not p.done
    p = JsonPrefix()
    assert p.feed(data) and p.done
    json.loads(text)                                   # the reference agrees


@pytest.mark.parametrize("text", INVALID)
def test_anything_else_is_refused(text):
    p = JsonPrefix()
    assert not (p.feed(text.encode()) and p.done)


@pytest.fixture(scope="module")
def engines(demo_model):
    return {spec: Engine(model=str(demo_model), spec=spec, progress=False) for spec in ("none", "mtp")}


def test_replies_are_json_and_speculation_changes_no_token(engines):
    prompt = 'settings = json.loads(\'\'\''
    plain = engines["none"].generate(prompt, SamplingParams(max_tokens=80, json=True))
    assert plain.finish_reason == "stop" and isinstance(json.loads(plain.text), dict)
    for k in (1, 3):
        got = engines["mtp"].generate(prompt, SamplingParams(max_tokens=80, json=True),
                                      spec=SpecConfig(draft_max=k, adaptive=False))
        assert got.tokens == plain.tokens
    free = engines["none"].generate(prompt, SamplingParams(max_tokens=80))
    assert free.tokens != plain.tokens                # the constraint did something


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sampled_replies_that_stop_are_json(engines, seed):
    r = engines["mtp"].generate('config = ', SamplingParams(max_tokens=200, json=True, temperature=0.8, top_p=0.95,
                                                            seed=seed), spec=SpecConfig(draft_max=3, adaptive=False))
    text = r.text
    if r.finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    else:                                              # cut by max_tokens: still a prefix of an object
        assert JsonPrefix().feed(text.encode())
