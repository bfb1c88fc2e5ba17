"""`nextn serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over the continuous-batching engine.

/v1/completions and /v1/chat/completions (streaming over SSE or not), /v1/models (each also without
/v1, as llama-server answers them), /health, /metrics; CORS for --cors-origins. `/` is a chat page
(static/index.html, no network) that marks which tokens came from accepted drafts; `/info` feeds it.
Each response carries `usage` and `timings` (tokens/s, draft and accepted counts); a request may opt
out of speculation (`"speculative": false`), pick among the server's drafters (`"speculative": "ngram"`)
or set its own `draft_max`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import socket
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine.config import EngineConfig
from ..engine.engine import Engine
from ..errors import NextnError
from ..text.tools import ToolStream, parse as parse_tool_calls
from . import protocol
from .loop import EngineLoop
from .metrics import Metrics
from .protocol import ApiError


API_ROUTES = ("/completions", "/chat/completions", "/models")   # answered with and without /v1, as llama-server


def _is_api(path: str) -> bool:
    bare = path[3:] if path.startswith("/v1/") else path
    return path.startswith("/v1/") or bare in API_ROUTES or bare.startswith("/models/")


def create_app(engine: Engine, api_key: str | None = None, model_name: str | None = None,
               cors_origins: list[str] | None = None) -> FastAPI:
    loop = EngineLoop(engine)

    @contextlib.asynccontextmanager
    async def lifespan(_):
        yield
        loop.stop()

    app = FastAPI(title="nextn", docs_url=None, redoc_url=None, lifespan=lifespan)
    metrics = Metrics(engine)
    model_id = model_name or engine.model_name
    aliases = {model_id, engine.file.path.name, engine.file.path.stem}
    app.state.loop, app.state.metrics = loop, metrics

    @app.exception_handler(ApiError)
    async def _api_error(_, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_, exc):
        return JSONResponse(ApiError(400, str(exc)).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):   # unknown route, wrong method: OpenAI's shape
        what = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        err = ApiError(exc.status_code, what.get(exc.status_code, str(exc.detail)), kind="invalid_request_error")
        return JSONResponse(err.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key and _is_api(request.url.path) and request.method != "OPTIONS":
            got = request.headers.get("authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {api_key}".encode()):
                err = ApiError(401, "invalid API key", code="invalid_api_key", kind="authentication_error")
                return JSONResponse(err.body(), status_code=401)
        return await call_next(request)

    page = (Path(__file__).parent / "static" / "index.html").read_text(encoding="utf-8")

    @app.get("/")
    def index():
        return HTMLResponse(page)

    @app.get("/info")
    def info():
        """What the page shows: the model, its publishing form, the drafters, whether a key is needed."""
        return {"model": model_id, "form": engine.model_form(), "drafters": list(engine.drafters),
                "api_key": bool(api_key)}

    @app.get("/health")
    def health():
        if fatal := loop.fatal or engine.lost():
            return JSONResponse({"status": "unavailable", "error": fatal}, status_code=503)
        if loop.error:
            return JSONResponse({"status": "error", "error": loop.error.splitlines()[-1]}, status_code=500)
        return {"status": "ok"}

    @app.get("/metrics")
    def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    def model_card() -> dict:
        return {"id": model_id, "object": "model", "created": int(time.time()), "owned_by": "nextn"}

    @app.get("/v1/models")
    @app.get("/models")
    def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    @app.get("/models/{name:path}")
    def model(name: str):
        if name not in aliases:
            raise ApiError(404, f"model '{name}' does not exist (this server serves '{model_id}')", "model",
                           "model_not_found")
        return model_card()

    async def _body(request: Request):
        try:
            return json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"invalid JSON body: {e}") from None
        except RecursionError:
            raise ApiError(400, "invalid JSON body: nested too deeply") from None

    async def handle(request: Request, chat: bool):
        endpoint = "chat" if chat else "completions"
        body = await _body(request)
        if isinstance(body, dict) and body.get("model") not in (None, "", *aliases):
            raise ApiError(404, f"model '{body['model']}' does not exist (this server serves '{model_id}')",
                           "model", "model_not_found")
        req = protocol.parse(body, chat, engine.default_spec(), engine.recommended)
        try:
            ids = engine.encode_prompt(req.prompt, req.messages, req.tools)
            if any(not 0 <= t < engine.model_config.n_vocab for t in ids):
                raise ApiError(400, f"token ids must be in [0, {engine.model_config.n_vocab})", "prompt")
            if len(ids) >= engine.config.ctx_size:
                raise ApiError(400, f"the prompt has {len(ids)} tokens; this server's context holds "
                                    f"{engine.config.ctx_size}", "prompt", "context_length_exceeded")
            queue: asyncio.Queue = asyncio.Queue()
            seqs = [loop.submit(ids, req.choice_params(0), req.spec, queue)[0]]
            seqs += [loop.submit(ids, req.choice_params(i), req.spec, queue, share=seqs[0])[0] for i in range(1, req.n)]
        except NextnError as e:
            raise ApiError(400, str(e)) from None

        rid = protocol.new_id("chatcmpl" if chat else "cmpl")
        echo = engine.tokenizer.decode(ids) if req.echo else ""
        t0 = time.perf_counter()
        tools = bool(req.tools)
        if req.stream:
            return StreamingResponse(_stream(request, seqs, queue, rid, chat, req.include_usage, t0, endpoint, echo,
                                             tools), media_type="text/event-stream")
        return await _collect(request, seqs, queue, rid, chat, t0, endpoint, echo, tools)

    async def _next(request: Request, seqs, queue: asyncio.Queue):
        while True:
            try:
                return await asyncio.wait_for(queue.get(), timeout=0.25)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    for seq in seqs:
                        loop.cancel(seq)
                    return None

    def _usage(seqs) -> dict:
        return protocol.usage(seqs[0].n_prompt, sum(s.n_generated for s in seqs))

    def _timings(seqs) -> dict:
        if len(seqs) == 1:
            return seqs[0].stats.to_dict()
        merged = type(seqs[0].stats)()
        for s in seqs:
            merged.merge(s.stats)
        merged.prompt_tokens = seqs[0].n_prompt
        return merged.to_dict()

    async def _collect(request, seqs, queue, rid, chat, t0, endpoint, echo, tools):
        index = {s.id: i for i, s in enumerate(seqs)}
        parts, first, done = [[echo] for _ in seqs], None, set()
        while len(done) < len(seqs):
            out = await _next(request, seqs, queue)
            if out is None:
                metrics.requests.labels(endpoint, "cancelled").inc()
                return Response(status_code=499)
            first = first or time.perf_counter()
            parts[index[out.seq.id]].append(out.text)
            if out.finished:
                done.add(out.seq.id)
        metrics.ttft.observe(first - t0)
        metrics.latency.observe(time.perf_counter() - t0)
        metrics.requests.labels(endpoint, seqs[0].finish_reason or "stop").inc()
        body = None
        for i, seq in enumerate(seqs):
            text, calls = "".join(parts[i]), None
            if tools:
                content, calls = parse_tool_calls(text)
                text = content or "" if calls else text
            one = protocol.completion_body(rid, model_id, chat, text, _reason(seq), _usage(seqs),
                                           _timings(seqs), logprobs=_logprobs(seq, _echoed(seq) + seq.logprobs, chat),
                                           index=i, tool_calls=calls)
            if body is None:
                body = one
            else:
                body["choices"] += one["choices"]
        return JSONResponse(body)

    async def _stream(request, seqs, queue, rid, chat, include_usage, t0, endpoint, echo, tools):
        index = {s.id: i for i, s in enumerate(seqs)}
        started, done = set(), set()
        held = {s.id: ToolStream() for s in seqs} if tools else {}    # tool calls: sent whole, at the end
        try:
            while len(done) < len(seqs):
                out = await _next(request, seqs, queue)
                if out is None:
                    return
                seq, i = out.seq, index[out.seq.id]
                first = seq.id not in started
                if first and not started:
                    metrics.ttft.observe(time.perf_counter() - t0)
                if out.finished:
                    done.add(seq.id)
                if out.text or first or out.finished or out.tokens:     # every step's tokens carry their marks
                    text, calls = out.text, None
                    if tools:
                        text = held[seq.id].feed(text)
                        if out.finished:
                            rest, calls = held[seq.id].finish()
                            text += rest
                    chunk = protocol.completion_body(rid, model_id, chat, (echo if first else "") + text,
                                                     _reason(seq) if out.finished else None, None,
                                                     seq.stats.to_dict() if out.finished else None,
                                                     delta=True, first=first,
                                                     logprobs=_logprobs(seq, (_echoed(seq) if first else []) + out.logprobs,
                                                                        chat),
                                                     index=i, tool_calls=calls)
                    chunk["nextn"] = {"tokens": len(out.tokens), "drafted": out.drafted, "accepted": out.accepted,
                                      "drafter": out.drafter}
                    yield f"data: {json.dumps(chunk)}\n\n"
                    started.add(seq.id)
            if include_usage:
                chunk = protocol.completion_body(rid, model_id, chat, "", None, _usage(seqs), None, delta=True)
                chunk["choices"] = []
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
            metrics.latency.observe(time.perf_counter() - t0)
            metrics.requests.labels(endpoint, seqs[0].finish_reason or "stop").inc()
        finally:
            if len(done) < len(seqs):   # client went away mid-stream: free the slots now
                for seq in seqs:
                    loop.cancel(seq)
                metrics.requests.labels(endpoint, "cancelled").inc()

    def _piece(token: int) -> tuple[str, bytes]:
        return engine.tokenizer.decode([token], skip_special=False), engine.tokenizer.token_bytes(token)

    def _echoed(seq) -> list:
        """The prompt's entries for echo with logprobs: its first token has none (nothing predicts it)."""
        if not seq.params.prompt_logprobs:
            return []
        return [(seq.prompt[0], None, [])] + seq.prompt_logprobs

    def _logprobs(seq, entries: list, chat: bool) -> dict | None:
        return protocol.logprobs_body(entries, chat, _piece) if seq.params.logprobs is not None else None

    @app.post("/v1/completions")
    @app.post("/completions")
    async def completions(request: Request):
        return await handle(request, chat=False)

    @app.post("/v1/chat/completions")
    @app.post("/chat/completions")
    async def chat_completions(request: Request):
        return await handle(request, chat=True)

    if cors_origins:      # outermost: preflights are answered before the key check, every answer carries the headers
        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


def _reason(seq) -> str:
    return {"stop": "stop", "length": "length"}.get(seq.finish_reason, seq.finish_reason or "stop")


def add_args(p) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8080)
    p.add_argument("-np", "--parallel", type=int, default=4, help="concurrent sequences (slots)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--alias", default=None, help="model name served by /v1/models")
    p.add_argument("--cors-origins", default=None, metavar="ORIGINS",
                   help="let browser pages from these origins call the API (comma list, or *; default: none)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"invalid port {text!r} (1-65535)")
    return port


def _check_bind(host: str, port: int) -> None:
    """Fail before loading the model if the address cannot be served."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise NextnError(f"--host {host}: {e.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise NextnError(f"cannot serve on {host}:{port} ({e.strerror})") from None


def main(args) -> int:
    import uvicorn

    _check_bind(args.host, args.port)
    engine = Engine(EngineConfig.from_args(args, n_parallel=args.parallel))
    engine.generate([engine.tokenizer.bos_id or 0], engine.sampling_params(max_tokens=2, temperature=0))  # it runs
    engine.stats = type(engine.stats)()
    origins = [o.strip() for o in args.cors_origins.split(",") if o.strip()] if args.cors_origins else None
    app = create_app(engine, api_key=args.api_key, model_name=args.alias, cors_origins=origins)
    print(f"nextn: serving {engine.model_name} on http://{args.host}:{args.port} "
          f"({args.parallel} slots, speculation: {'+'.join(engine.drafters) or 'none'})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
