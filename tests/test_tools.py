"""Tool calls: parsing the three shapes models write, streaming with the calls held back, OpenAI's bodies."""

from __future__ import annotations

import json

import pytest

from nextn.server import protocol
from nextn.text.tools import ToolStream, held, parse

ARGS = {"city": "Paris", "days": 3}
REPLIES = {
    "json": 'Let me look.\n<tool_call>\n{"name": "weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>',
    "xml": "Let me look.\n<tool_call>\n<function=weather>\n<parameter=city>\nParis\n</parameter>\n"
           "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>",
    "glm": "Let me look.\n<tool_call>weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
           "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>",
}


@pytest.mark.parametrize("shape", REPLIES)
def test_each_shape_parses_to_name_and_json_arguments(shape):
    content, calls = parse(REPLIES[shape])
    assert content == "Let me look."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("weather", ARGS)]
    assert calls[0].id.startswith("call_")


def test_several_calls_no_text_and_string_arguments():
    text = ('<tool_call>\n{"name": "a", "arguments": "{\\"x\\": 1}"}\n</tool_call>\n'
            '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>')
    content, calls = parse(text)
    assert content is None and [(c.name, json.loads(c.arguments)) for c in calls] == [("a", {"x": 1}), ("b", {})]
    assert calls[0].id != calls[1].id


@pytest.mark.parametrize("text", [
    "no calls at all",
    "<tool_call>\n{not json}\n</tool_call>",
    '<tool_call>\n{"arguments": {}}\n</tool_call>',                   # no name
    '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call> and then more prose',
])
def test_what_does_not_parse_stays_text(text):
    assert parse(text) == (text, [])


def test_an_unterminated_call_at_the_length_limit_still_parses():
    _, calls = parse('<tool_call>\n{"name": "a", "arguments": {"x": 1}}')
    assert calls[0].name == "a"


def test_stream_holds_back_the_calls_and_any_tail_that_may_open_one():
    assert held("abc <tool_") == len("<tool_") and held("abc <") == 1 and held("abc") == 0
    stream, sent = ToolStream(), []
    text = REPLIES["json"]
    for i in range(0, len(text), 3):                   # three characters per step
        sent.append(stream.feed(text[i:i + 3]))
    rest, calls = stream.finish()
    assert ("".join(sent) + rest).strip() == "Let me look." and "<" not in "".join(sent)
    assert calls[0].name == "weather"
    plain = ToolStream()
    assert plain.feed("a <") == "a " and plain.feed("b") == "<b" and plain.finish() == ("", [])


def test_openai_bodies_carry_tool_calls():
    _, calls = parse(REPLIES["xml"])
    body = protocol.completion_body("id", "m", True, "", "stop", None, None, tool_calls=calls)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "weather", "arguments": json.dumps(ARGS)}
    chunk = protocol.completion_body("id", "m", True, "", "stop", None, None, delta=True, tool_calls=calls)
    assert chunk["choices"][0]["delta"]["tool_calls"][0]["index"] == 0


def test_requests_with_tools_are_checked():
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    msgs = [{"role": "user", "content": "x"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    req = protocol.parse({"messages": msgs, "tools": [tool]}, True, protocol.SpecConfig())
    assert req.tools == [tool] and req.messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}
    assert protocol.parse({"messages": msgs, "tools": [tool], "tool_choice": "none"}, True, protocol.SpecConfig()).tools is None
    for bad, param in [({"tools": [{"type": "function"}]}, "tools"), ({"tools": [tool], "tool_choice": "required"}, "tool_choice"),
                       ({"messages": [{"role": "assistant", "content": "", "tool_calls": [
                           {"function": {"name": "f", "arguments": "{oops"}}]}]}, "messages")]:
        with pytest.raises(protocol.ApiError) as err:
            protocol.parse({"messages": msgs, **bad}, True, protocol.SpecConfig())
        assert err.value.status == 400 and err.value.param == param
