"""json_schema: the automaton accepts exactly the texts a schema allows (jsonschema is the reference), every
prefix it accepts can still be completed, what it cannot enforce is refused by name, and constrained replies
validate, token-identical with and without speculation."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest

from nextn.engine.engine import Engine
from nextn.engine.params import SamplingParams
from nextn.engine.sequence import SpecConfig
from nextn.text.json_mode import JsonPrefix
from nextn.text.json_schema import SchemaError

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age"],
          "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 5},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120},
                         "tags": {"type": "array", "items": {"enum": ["a", "bc"]}, "maxItems": 2}}}
CHOICE = {"anyOf": [{"type": "integer", "minimum": -5, "exclusiveMaximum": 251},
                    {"type": "string", "minLength": 2, "maxLength": 3}, {"type": "null"}]}
TREE = {"$defs": {"node": {"type": "object", "required": ["v"],
                           "properties": {"v": {"type": "number"},
                                          "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}}}},
        "$ref": "#/$defs/node"}
TUPLE = {"type": "array", "prefixItems": [{"type": "boolean"}, {"const": {"a": [1, "x"]}}], "items": False,
         "minItems": 1}
OPEN = {"type": ["object", "null"], "properties": {"é": {"type": "string"}}, "additionalProperties": {"type": "integer"}}

CASES = [
    (PERSON, ['{"name": "bob", "age": 42}', '{"age":0,"name":"ab\\u00e9","tags":["bc","a"]}', '{"name":"é","age":120}'],
     ['{"age": 42}', '{"name":"bobbyx","age":1}', '{"name":"b","age":121}', '{"name":"b","age":-1}',
      '{"name":"b","age":1.5}', '{"name":"b","age":1,"tags":["a","a","a"]}', '{"name":"b","age":1,"x":1}',
      '{"name":"","age":1}', '{"name":"b","age":01}']),
    (CHOICE, ['-5', '250', '0', '"ab"', '"a\\nc"', 'null'], ['-6', '251', '"a"', '"abcd"', 'true', '1.5', '-']),
    (TREE, ['{"v": 1.5e3}', '{"v":-0,"kids":[{"v":1},{"v":2,"kids":[]}]}', '{"v":1,"other":[true,{"x":null}]}'],
     ['{"kids":[]}', '{"v":"1"}', '{"v":1,"kids":[{"v":1},{"v":2},{"v":3}]}', '{"v":1,"kids":[{}]}']),
    (TUPLE, ['[true]', '[false, {"a": [1, "x"]}]'], ['[]', '[true,{"a":[1,"y"]}]', '[true,{"a":[1,"x"]},1]', '[1]']),
    (OPEN, ['null', '{"é": "x", "n": 3}', '{}'], ['{"é": 1}', '{"n": "x"}', '{"n": 1, "n": 2}', '[]']),
]


@pytest.mark.parametrize("schema,valid,invalid", CASES)
def test_schema_instances_agree_with_the_reference(schema, valid, invalid):
    check = jsonschema.Draft202012Validator(schema)
    for text in valid:
        assert check.is_valid(json.loads(text)), text
        data = text.encode()
        for n in range(len(data)):
            assert JsonPrefix(schema).feed(data[:n]), text[:n]
        p = JsonPrefix(schema)
        assert p.feed(data) and p.done, text
    for text in invalid:
        try:
            if "01" not in text and '"n": 1, "n"' not in text:   # bad JSON, or a key twice (JSON allows it, we not)
                assert not check.is_valid(json.loads(text)), text
        except json.JSONDecodeError:
            pass
        p = JsonPrefix(schema)
        assert not (p.feed(text.encode()) and p.done), text


ALPHABET = bytes(range(0x20, 0x7F)) + b"\n\t"
SHORT = b'"}],'                          # bytes that tend to close what is open, preferred so walks end


TREE_CLOSED = {**TREE, "$defs": {"node": {**TREE["$defs"]["node"], "additionalProperties": False}}}


@pytest.mark.parametrize("schema", [PERSON, CHOICE, TREE_CLOSED, TUPLE, OPEN, {"type": "object"}, True])
def test_random_walks_never_dead_end_and_end_valid(schema):
    """Grow texts byte by byte, choosing among the bytes the automaton accepts: at every point some byte or
    the end must be allowed, and every text it calls complete validates."""
    rng, check, ended = random.Random(0), jsonschema.Draft202012Validator(schema if schema is not True else {}), 0
    for _ in range(60):
        p, text = JsonPrefix(schema), b""
        while len(text) < 300:
            nxt = [b for b in ALPHABET if p.copy().feed(bytes([b]))]
            assert nxt or p.done, text
            if p.done and (not nxt or rng.random() < 0.3):
                check.validate(json.loads(text))
                ended += 1
                break
            short = [b for b in nxt if b in SHORT]
            b = rng.choice(short if short and rng.random() < 0.4 + len(text) / 250 else nxt)
            assert p.feed(bytes([b]))
            text += bytes([b])
    assert ended >= 10


@pytest.mark.parametrize("schema,word", [
    ({"type": "string", "pattern": "^a"}, "'pattern'"),
    ({"type": "number", "minimum": 0}, "integers only"),
    ({"type": "object", "properties": {"a": {"type": "string", "format": "email", "minProperties": 1}}}, "minProperties"),
    ({"allOf": [{"type": "string"}, {"maxLength": 3}]}, "allOf"),
    ({"$ref": "#/$defs/missing"}, "points at nothing"),
    ({"$ref": "http://example.com/s.json"}, "inside the schema"),
    ({"type": "object", "required": ["a"], "additionalProperties": False}, "requires a"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "allows no integer"),
    ({"type": "string", "minLength": 3, "maxLength": 2}, "maxLength < minLength"),
    ({"type": "colour"}, "must be one of"),
    (False, "no value"),
])
def test_what_cannot_be_enforced_is_refused_by_name(schema, word):
    with pytest.raises(SchemaError, match=word.replace("(", r"\(")):
        SamplingParams(json_schema=schema)


@pytest.fixture(scope="module")
def engines(demo_model):
    return {spec: Engine(model=str(demo_model), spec=spec, progress=False) for spec in ("none", "mtp")}


REPLY = {"type": "object", "additionalProperties": False, "required": ["name", "size", "ok"],
         "properties": {"name": {"type": "string", "maxLength": 12}, "size": {"type": "integer", "minimum": 1,
                                                                             "maximum": 64},
                        "ok": {"type": "boolean"}, "dims": {"type": "array", "items": {"type": "integer"},
                                                            "maxItems": 3}}}


def test_greedy_replies_validate_and_speculation_changes_no_token(engines):
    params = SamplingParams(max_tokens=120, json_schema=REPLY)
    plain = engines["none"].generate("config = ", params)
    assert plain.finish_reason == "stop"
    jsonschema.validate(json.loads(plain.text), REPLY)
    for k in (1, 3):
        got = engines["mtp"].generate("config = ", params, spec=SpecConfig(draft_max=k, adaptive=False))
        assert got.tokens == plain.tokens
    loose = engines["none"].generate("config = ", SamplingParams(max_tokens=120, json=True))
    assert loose.tokens != plain.tokens              # the schema did more than JSON mode


@pytest.mark.parametrize("seed", [1, 2])
def test_sampled_replies_validate(engines, seed):
    r = engines["mtp"].generate("config = ", SamplingParams(max_tokens=160, json_schema=REPLY, temperature=0.8,
                                                            top_p=0.95, seed=seed),
                                spec=SpecConfig(draft_max=3, adaptive=False))
    if r.finish_reason == "stop":
        jsonschema.validate(json.loads(r.text), REPLY)
    else:
        assert JsonPrefix(REPLY).feed(r.text.encode())
