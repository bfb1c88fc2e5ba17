"""Tool calls: the calls a model writes in its reply, parsed into OpenAI's `tool_calls`.

The functions a request offers reach the model through its own chat template (`tools`), which teaches
it one of three shapes, all inside <tool_call> ... </tool_call>:
- JSON (Qwen2.5/Qwen3, Qwen3-Next): {"name": "f", "arguments": {"x": 1}}
- XML (Qwen3.5, Qwen3-Coder): <function=f> <parameter=x> 1 </parameter> </function>
- GLM-4.5..4.7: f <arg_key>x</arg_key> <arg_value>1</arg_value>
Parameter values are JSON where they parse as JSON, else strings. A reply whose blocks do not parse is
returned as plain text (no call is invented). `ToolStream` holds back streamed text from the first
<tool_call> on (and any tail that could begin one), so clients see text deltas, then the calls.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_XML = re.compile(r"<function=([^>\n]+)>(.*?)(?:</function>|$)", re.S)
_XML_PARAM = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.S)
_GLM_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)


@dataclass
class ToolCall:
    name: str
    arguments: str          # a JSON object, as text (OpenAI's shape)
    id: str = ""

    def body(self, index: int | None = None) -> dict:
        out = {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}
        return out if index is None else {"index": index, **out}


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _block(body: str) -> ToolCall | None:
    body = body.strip()
    if body.startswith("{"):
        try:
            obj = json.loads(body)
        except ValueError:
            return None
        args = obj.get("arguments", obj.get("parameters", {})) if isinstance(obj, dict) else None
        if isinstance(args, str):
            args = _value(args)
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not isinstance(args, dict):
            return None
        return ToolCall(obj["name"], json.dumps(args, ensure_ascii=False))
    if m := _XML.match(body):
        args = {k.strip(): _value(v) for k, v in _XML_PARAM.findall(m.group(2))}
        return ToolCall(m.group(1).strip(), json.dumps(args, ensure_ascii=False))
    name, _, rest = body.partition("\n")
    name = name.split("<arg_key>")[0].strip()
    if not name or any(c in name for c in '<>{}"') or len(name.split()) != 1:
        return None
    args = {k.strip(): _value(v.strip()) for k, v in _GLM_PAIR.findall(body)}
    return ToolCall(name, json.dumps(args, ensure_ascii=False))


def parse(text: str) -> tuple[str | None, list[ToolCall]]:
    """(the text before the calls, or None when empty; the calls). No calls: (text, [])."""
    start = text.find(OPEN)
    if start < 0:
        return text, []
    calls, pos = [], start
    while pos >= 0:
        end = text.find(CLOSE, pos)
        body = text[pos + len(OPEN):end if end >= 0 else len(text)]
        call = _block(body)
        if call is None:
            return text, []
        call.id = "call_" + uuid.uuid4().hex[:24]
        calls.append(call)
        if end < 0:
            break
        pos = text.find(OPEN, end)
        if pos < 0 and text[end + len(CLOSE):].strip():
            return text, []               # prose after the calls: not a tool-call reply
    content = text[:start].strip()
    return content or None, calls


def held(text: str) -> int:
    """How many characters at the end of text could be the beginning of <tool_call>."""
    for n in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-n:]):
            return n
    return 0


class ToolStream:
    """Streamed text with tool calls held back: feed() gives the text that is safe to send now;
    finish() gives (the rest of the text, the calls)."""

    def __init__(self):
        self.text, self.sent = "", 0

    def feed(self, delta: str) -> str:
        self.text += delta
        start = self.text.find(OPEN)
        safe = start if start >= 0 else len(self.text) - held(self.text)
        out = self.text[self.sent:max(safe, self.sent)]
        self.sent = max(safe, self.sent)
        return out

    def finish(self) -> tuple[str, list[ToolCall]]:
        _, calls = parse(self.text)
        if not calls:
            return self.text[self.sent:], []
        start = self.text.find(OPEN)
        return self.text[self.sent:start].rstrip() if start > self.sent else "", calls
