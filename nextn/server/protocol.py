"""OpenAI request parsing and response shapes (no HTTP, no engine): bad input raises ApiError."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import dataclass

from ..engine.params import SamplingParams
from ..engine.sequence import SpecConfig, parse_spec
from ..text.json_schema import SchemaError


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Request:
    stream: bool
    params: SamplingParams
    spec: SpecConfig | None
    include_usage: bool
    prompt: str | list[int] | None = None
    messages: list[dict] | None = None
    tools: list[dict] | None = None   # chat: functions offered to the model (tool_choice "auto"); None: no tools
    n: int = 1                      # choices, each its own sequence (a seed s gives choice i the seed s + i)
    echo: bool = False              # completions: the prompt's text before the completion

    def choice_params(self, i: int) -> SamplingParams:
        if self.params.seed is None or i == 0:
            return self.params
        return dataclasses.replace(self.params, seed=(self.params.seed + i) % 2**64)


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "a boolean (true or false)", dict: "an object",
               str: "a string", list: "a list"}


def _get(body: dict, key: str, types, default=None, check=None, why: str = ""):
    value = body.get(key, default)
    if value is None:
        return default
    kinds = types if isinstance(types, tuple) else (types,)
    why = why or " or ".join(dict.fromkeys(_TYPE_NAMES[t] for t in kinds))
    if isinstance(value, bool) and bool not in kinds:
        raise ApiError(400, f"'{key}' must be {why}", key)
    if not isinstance(value, types) or (check is not None and not check(value)):
        raise ApiError(400, f"'{key}' must be {why}", key)
    return value


ROLES = ("system", "developer", "user", "assistant", "tool")


OPENAI_DEFAULTS = {"temperature": 1.0}
MAX_CHOICES = 16

# parameters nextn does not implement, and the values that ask for nothing (accepted); anything else is a 400
UNSUPPORTED = {"functions": (None, []), "function_call": (None, "none"),
               "logit_bias": (None, {}),
               "suffix": (None, ""), "parallel_tool_calls": (None, False, True)}


def parse(body, chat: bool, default_spec: SpecConfig, recommended: dict | None = None) -> Request:
    """A request's parameters: those it gives, else the model's recommended ones, else OpenAI's defaults."""
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    num = (int, float)
    n = _get(body, "n", int, 1, lambda v: 1 <= v <= MAX_CHOICES, f"an integer in [1, {MAX_CHOICES}]")
    _get(body, "best_of", int, n, lambda v: v == n, "equal to 'n' (every choice is returned)")
    logprobs = _logprobs(body, chat)
    echo = not chat and bool(_get(body, "echo", bool, False))
    for key, off in UNSUPPORTED.items():
        if key in body and body[key] not in off:
            raise ApiError(400, f"'{key}' is not supported by this server", key)
    json_object, json_schema = _response_format(body.get("response_format"))
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4):
        raise ApiError(400, "'stop' must be a string or a list of up to 4 non-empty strings", "stop")
    max_key = "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
    number = lambda key, check=None, why="": _float(_get(body, key, num, None, check, why))  # noqa: E731
    try:
        params = SamplingParams.with_defaults(
            {**OPENAI_DEFAULTS, **(recommended or {})},
            temperature=number("temperature", lambda v: 0 <= v <= 2, "a number in [0, 2]"),
            top_p=number("top_p", lambda v: 0 < v <= 1, "a number in (0, 1]"),
            top_k=_get(body, "top_k", int, None, lambda v: v >= 0, "an integer >= 0"),
            min_p=number("min_p"),
            repetition_penalty=number("repetition_penalty"),
            penalty_last_n=_get(body, "repeat_last_n", int, None, lambda v: v >= -1, "an integer >= -1"),
            presence_penalty=number("presence_penalty"),
            frequency_penalty=number("frequency_penalty"),
            seed=_get(body, "seed", int, None, lambda v: 0 <= v < 2**64, "an integer in [0, 2^64)"),
            max_tokens=_get(body, max_key, int, 16 if not chat else 4096,
                            lambda v: v >= 1 or (v == 0 and echo and logprobs is not None),
                            "a positive integer (0 only with 'echo' and 'logprobs': the prompt scored alone)"),
            stop=stop or [],
            ignore_eos=bool(_get(body, "ignore_eos", bool, False)),
            logprobs=logprobs,
            prompt_logprobs=echo and logprobs is not None,
            json=json_object,
            json_schema=json_schema,
        )
    except SchemaError as e:
        raise ApiError(400, str(e), "response_format") from None
    except ValueError as e:
        raise ApiError(400, str(e)) from None
    spec = None
    if "draft_max" in body or "speculative" in body:
        k = _get(body, "draft_max", int, default_spec.draft_max, lambda v: 0 <= v <= 16, "an integer in [0, 16]")
        drafters = _drafters(_get(body, "speculative", (bool, str), True), default_spec.drafters)
        if not drafters:
            k = 0
        spec = SpecConfig(draft_max=k, draft_min=min(default_spec.draft_min, k), p_min=default_spec.p_min,
                          adaptive=default_spec.adaptive, drafters=drafters)
    options = _get(body, "stream_options", dict, {}) or {}
    req = Request(stream=bool(_get(body, "stream", bool, False)), params=params, spec=spec,
                  include_usage=bool(options.get("include_usage", False)), n=n, echo=echo)
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects", "messages")
        for i, m in enumerate(messages):
            if m["role"] not in ROLES:
                raise ApiError(400, f"messages[{i}].role is '{m['role'][:40]}'; expected one of {', '.join(ROLES)}",
                               "messages")
        req.messages = [_message(m, i) for i, m in enumerate(messages)]
        req.tools = _tools(body)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(
                isinstance(t, int) and not isinstance(t, bool) for t in prompt)):
            req.prompt = prompt
        else:
            raise ApiError(400, "'prompt' must be a string or a list of token ids (one prompt per request)", "prompt")
    return req


def _response_format(value) -> tuple[bool, dict | bool | None]:
    """(JSON mode, schema) of `response_format`: text, json_object (llama-server's optional "schema" beside it
    too) or OpenAI's json_schema {name, schema, strict}."""
    kind = value.get("type") if isinstance(value, dict) else None
    if value is None or kind == "text":
        return False, None
    if kind == "json_object":
        return "schema" not in value, value.get("schema")
    if kind == "json_schema" and isinstance(value.get("json_schema"), dict):
        return False, value["json_schema"].get("schema", True)
    raise ApiError(400, "'response_format' must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or "
                        "{\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., \"schema\": {...}}}",
                   "response_format")


def _tools(body: dict) -> list[dict] | None:
    """The request's functions, checked; None when it offers none or says tool_choice "none"."""
    tools = body.get("tools")
    choice = body.get("tool_choice", "auto")
    if choice not in ("auto", "none"):
        raise ApiError(400, "'tool_choice' must be \"auto\" or \"none\" (this server does not force a call)",
                       "tool_choice")
    if tools is None or tools == [] or choice == "none":
        return None
    if not isinstance(tools, list) or not all(
            isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)
            and isinstance(t["function"].get("name"), str) and t["function"]["name"]
            and isinstance(t["function"].get("parameters", {}), dict) for t in tools):
        raise ApiError(400, "'tools' must be a list of {\"type\": \"function\", \"function\": {\"name\": ..., "
                            "\"parameters\": {...}}}", "tools")
    return tools


def _message(m: dict, i: int) -> dict:
    """A message as chat templates read it: text content; an assistant's tool calls with their arguments
    as objects (templates iterate them)."""
    out = {**m, "content": _content(m.get("content"))}
    calls = m.get("tool_calls")
    if calls is not None:
        if m["role"] != "assistant" or not isinstance(calls, list) or not all(
                isinstance(c, dict) and isinstance(c.get("function"), dict)
                and isinstance(c["function"].get("name"), str) for c in calls):
            raise ApiError(400, f"messages[{i}].tool_calls must be an assistant's list of "
                                f"{{\"function\": {{\"name\": ..., \"arguments\": ...}}}}", "messages")
        out["tool_calls"] = [{**c, "function": {**c["function"], "arguments": _arguments(c["function"].get("arguments"), i)}}
                             for c in calls]
    return out


def _arguments(args, i: int) -> dict:
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            raise ApiError(400, f"messages[{i}].tool_calls: 'arguments' is not valid JSON", "messages") from None
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise ApiError(400, f"messages[{i}].tool_calls: 'arguments' must be a JSON object", "messages")
    return args


def _logprobs(body: dict, chat: bool) -> int | None:
    """How many alternatives per token a request wants with its logprobs (None: no logprobs). Chat:
    `logprobs: true` and `top_logprobs: n`; completions: `logprobs: n`."""
    if not chat:
        if body.get("logprobs") is False:
            return None
        return _get(body, "logprobs", int, None, lambda v: 0 <= v <= 20, "an integer in [0, 20]")
    top = _get(body, "top_logprobs", int, None, lambda v: 0 <= v <= 20, "an integer in [0, 20]")
    if not _get(body, "logprobs", bool, False):
        if top:
            raise ApiError(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs")
        return None
    return top or 0


def logprobs_body(entries: list, chat: bool, piece) -> dict:
    """OpenAI's logprobs object for (token, logprob, [(id, logprob)]) entries; piece(id) -> (text, bytes)."""
    if chat:
        def one(t, lp):
            text, raw = piece(t)
            return {"token": text, "logprob": lp, "bytes": list(raw)}
        return {"content": [{**one(t, lp), "top_logprobs": [one(a, alp) for a, alp in alts]} for t, lp, alts in entries],
                "refusal": None}
    texts = [piece(t)[0] for t, _, _ in entries]
    offsets = [sum(len(x) for x in texts[:i]) for i in range(len(texts))]
    return {"tokens": texts, "token_logprobs": [lp for _, lp, _ in entries],          # None: an echoed first token
            "top_logprobs": [None if lp is None else _by_text(alts, piece) for _, lp, alts in entries],
            "text_offset": offsets}


def _by_text(alts: list, piece) -> dict:
    """{token text: logprob}, most likely first; tokens with the same text (partial UTF-8) keep the likelier."""
    out: dict = {}
    for token, lp in alts:
        out.setdefault(piece(token)[0], lp)
    return out


def _drafters(value: bool | str, available: tuple[str, ...]) -> tuple[str, ...]:
    """'speculative': true (the server's drafters), false / "none", or drafter names such as "ngram"."""
    if value is True:
        return available
    if value is False:
        return ()
    try:
        asked = parse_spec(value)
    except ValueError as e:
        raise ApiError(400, f"'speculative': {e}", "speculative") from None
    missing = [d for d in asked if d not in available]
    if missing:
        have = "+".join(available) or "none"
        raise ApiError(400, f"'speculative': this server runs --spec {have}; {', '.join(missing)} is not available",
                       "speculative")
    return asked


def _float(v):
    return None if v is None else float(v)


def _content(content) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):   # [{"type": "text", "text": ...}]
        parts = [c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text"]
        if len(parts) == len(content) and all(isinstance(t, str) for t in parts):
            return "".join(parts)
    raise ApiError(400, "message content must be a string or a list of text parts", "messages")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(rid: str, model: str, chat: bool, text: str, finish: str | None, usage_: dict | None,
                    timings: dict | None, delta: bool = False, first: bool = False, logprobs: dict | None = None,
                    index: int = 0, tool_calls: list | None = None) -> dict:
    """tool_calls (chat): ToolCall objects; the message's content is then the text before them, or null."""
    if chat:
        if delta:
            d = {"role": "assistant", "content": text} if first else {"content": text}
            if tool_calls:
                d["tool_calls"] = [c.body(j) for j, c in enumerate(tool_calls)]
                finish = "tool_calls" if finish == "stop" else finish
            choice = {"index": index, "delta": d, "finish_reason": finish, "logprobs": logprobs}
        else:
            message = {"role": "assistant", "content": text}
            if tool_calls:
                message = {"role": "assistant", "content": text or None, "tool_calls": [c.body() for c in tool_calls]}
                finish = "tool_calls" if finish == "stop" else finish
            choice = {"index": index, "message": message, "finish_reason": finish, "logprobs": logprobs}
        obj = "chat.completion.chunk" if delta else "chat.completion"
    else:
        choice = {"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs}
        obj = "text_completion"
    body = {"id": rid, "object": obj, "created": int(time.time()), "model": model, "choices": [choice]}
    if usage_ is not None:
        body["usage"] = usage_
    if timings is not None:
        body["timings"] = timings
    return body
