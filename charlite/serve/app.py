"""The OpenAI-compatible HTTP API: every character is a model.

``GET /v1/models`` lists the characters; ``POST /v1/chat/completions`` answers as the one named
by ``model``, streamed (server-sent events) or whole. Errors are OpenAI-shaped JSON. With an
API key, every ``/v1`` request must carry ``Authorization: Bearer KEY``.

Needs the ``serve`` extra (FastAPI, uvicorn); imported only by ``charlite serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, Generator, Iterator
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from charlite import __version__, roleplay
from charlite import characters as registry
from charlite.backends import Backend, Batching, GenParams
from charlite.errors import CharliteError, NotFoundError
from charlite.knowledge import recall_into_messages
from charlite.profile import Profile
from charlite.serve import protocol
from charlite.serve.protocol import APIError
from charlite.serve.thoughts import ThoughtFilter
from charlite.voices import ResolvedModel, resolve_model

log = logging.getLogger("charlite.serve")


class Models:
    """Characters and the backends that voice them, loaded once and shared between requests."""

    def __init__(
        self, model: str | None = None, prompted: bool = False, parallel: int | None = None
    ):
        self.model = model
        self.prompted = prompted
        self.parallel = parallel  # sequences decoded together; None: CHARLITE_PARALLEL/default
        self._backends: dict[tuple, Backend] = {}
        self._lock = threading.Lock()

    def profile(self, slug: str) -> Profile:
        try:
            return registry.get_profile(slug)
        except NotFoundError as exc:
            close = exc.hint if exc.hint and exc.hint.startswith("did you mean") else None
            raise APIError(
                404,
                f"The model '{slug}' does not exist{'; ' + close if close else '.'} "
                "GET /v1/models lists the characters.",
                param="model",
                code="model_not_found",
            ) from None
        except CharliteError as exc:
            raise APIError(
                500, f"character '{slug}' cannot be loaded: {exc}", type="server_error"
            ) from None

    def resolve(self, profile: Profile, prompted: bool = False) -> ResolvedModel:
        return resolve_model(profile, self.model, self.prompted or prompted)

    def backend(self, resolved: ResolvedModel) -> Backend:
        key = (str(resolved.spec), str(resolved.path), str(resolved.lora))
        with self._lock:
            if key not in self._backends:
                backend = resolved.backend()
                if isinstance(backend, Batching):
                    # concurrent clients decode together in the model's shared batch
                    backend.enable_batching(self.parallel)
                self._backends[key] = backend
            return self._backends[key]

    def listing(self) -> list[dict[str, Any]]:
        out = []
        for slug, ref in registry.character_refs().items():
            try:
                profile = registry.get_profile(slug)
                label = self.resolve(profile).label
            except CharliteError:
                continue
            try:
                created = int(ref.path.stat().st_mtime)
            except OSError:
                created = 0
            out.append(
                {
                    "id": slug,
                    "object": "model",
                    "created": created,
                    "owned_by": "charlite",
                    "name": profile.name,
                    "charlite": {"bundled": ref.bundled, "model": label, "era": profile.era},
                }
            )
        return out


def _error(exc: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def create_app(
    api_key: str | None = None,
    model: str | None = None,
    prompted: bool = False,
    parallel: int | None = None,
) -> FastAPI:
    """The API app. ``model`` (a spec) overrides every character's model; see :func:`resolve_model`."""
    if api_key is not None:
        api_key = check_api_key(api_key)
    app = FastAPI(
        title="charlite", version=__version__, docs_url=None, redoc_url=None, openapi_url=None
    )
    models = Models(model, prompted, parallel)
    app.state.models = models
    _add_error_handlers(app)
    if api_key:
        _add_auth(app, api_key)
    _add_routes(app, models)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, as OpenAI-shaped JSON."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return _error(APIError(exc.status_code, message, code=code))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(APIError(400, f"invalid request: {exc.errors()[0].get('msg')}"))

    @app.exception_handler(CharliteError)
    async def _charlite_error(request: Request, exc: CharliteError) -> JSONResponse:
        return _error(APIError(500, str(exc), type="server_error", code="model_unavailable"))


def _add_auth(app: FastAPI, api_key: str) -> None:
    """Every ``/v1`` request must carry the key (``Authorization: Bearer KEY`` or ``X-Api-Key``)."""

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if request.url.path.startswith("/v1"):
            refused = _refused(request, api_key)
            if refused is not None:
                return _error(refused)
        return await call_next(request)


def _refused(request: Request, api_key: str) -> APIError | None:
    given = request.headers.get("authorization", "").strip()
    scheme, _, token = given.partition(" ")
    # surrounding spaces are never part of a key: a client that pasted one with its key (or
    # read it from a padded variable) still matches
    token = (
        token.strip()
        if scheme.lower() == "bearer"
        else request.headers.get("x-api-key", "").strip()
    )
    if not token:
        return APIError(
            401,
            "Missing API key: send 'Authorization: Bearer KEY' with the key given to "
            "'charlite serve --api-key'",
            code="invalid_api_key",
        )
    if not hmac.compare_digest(token.encode("utf-8"), api_key.encode("utf-8")):
        return APIError(401, "Incorrect API key provided", code="invalid_api_key")
    return None


def _add_routes(app: FastAPI, models: Models) -> None:
    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": models.listing()}

    @app.get("/v1/models/{slug}")
    def get_model(slug: str) -> dict[str, Any]:
        profile = models.profile(slug)
        found = [m for m in models.listing() if m["id"] == profile.slug]
        if not found:
            raise APIError(
                404, f"The model '{slug}' does not exist", param="model", code="model_not_found"
            )
        return found[0]

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        raw = await _read_body(request)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise APIError(400, "We could not parse the JSON body of your request.") from None
        req = protocol.parse_request(body)
        if req.ignored_tools:
            _warn_once(
                "tools",
                f"a client offered {req.ignored_tools} tool(s): charlite characters answer in "
                "words and never call tools, so they are ignored",
            )
        job = await run_in_threadpool(_prepare, models, req)
        if req.stream:
            return _ClosingStream(
                _until_disconnected(request, _stream(job)),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await run_in_threadpool(_complete, job)


def check_api_key(key: str) -> str:
    """The key without surrounding spaces; an empty one is refused (it would switch
    authentication off without a word, as an unset shell variable in ``--api-key "$KEY"`` does)."""
    key = key.strip()
    if not key:
        raise CharliteError(
            "the API key is empty",
            hint="pass a non-empty --api-key (or CHARLITE_API_KEY), or leave both out to serve "
            "without a key",
        )
    return key


_WARNED: set[str] = set()


def _warn_once(what: str, message: str) -> None:
    if what not in _WARNED:
        _WARNED.add(what)
        log.warning(message)


def _too_big() -> APIError:
    return APIError(413, f"the request body is over {protocol.MAX_BODY_BYTES // 1024 // 1024} MiB")


async def _read_body(request: Request) -> bytes:
    """The request body, read piece by piece: past the limit it is a 413 at once, so a huge
    body (chunked, with no Content-Length to refuse it by) is never read, let alone held, whole."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > protocol.MAX_BODY_BYTES:
        raise _too_big()
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > protocol.MAX_BODY_BYTES:
            raise _too_big()
        parts.append(part)
    return b"".join(parts)


class _ClosingStream(StreamingResponse):
    """A streamed reply whose generator is closed however the response ends.

    A client that hangs up mid-stream ends the response with the generator suspended inside
    the backend's generation (holding the model, or a slot of its batch); closing it here
    releases it at once, instead of whenever the garbage collector gets to it.
    """

    def __init__(self, content: AsyncGenerator[str, None], **kwargs: Any):
        self._source = content
        super().__init__(content, **kwargs)

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._source.aclose()


class _Job:
    """A validated request with its character, backend, prompt and sampling settings."""

    def __init__(self, req, profile, backend, prompt, params):
        self.req, self.profile, self.backend, self.prompt, self.params = (
            req,
            profile,
            backend,
            prompt,
            params,
        )
        self.id = protocol.new_id()
        self.model = profile.slug

    def prompt_tokens(self) -> int:
        """The prompt's size as :func:`charlite.roleplay.fit_context` estimates it: each
        message's content plus the template's tokens around it."""
        return sum(
            self.backend.count_tokens(m["content"])
            + (roleplay.SYSTEM_OVERHEAD if m["role"] == "system" else roleplay.MESSAGE_OVERHEAD)
            for m in self.prompt.messages
        )


def _prepare(models: Models, req: protocol.ChatRequest) -> _Job:
    profile = models.profile(req.model)
    resolved = models.resolve(profile, prompted=bool(req.charlite and req.charlite.prompted))
    backend = models.backend(resolved)
    params = protocol.gen_params(req, backend.n_ctx)
    prompt = protocol.build_prompt(
        profile,
        req,
        prompted=resolved.prompted,
        count_tokens=backend.count_tokens,
        n_ctx=backend.n_ctx,
        max_tokens=params.max_tokens,
    )
    # knowledge (issue 17): recalled paragraphs go into the newest user turn, as in chat
    recall_into_messages(
        profile, resolved, prompt.messages, count_tokens=backend.count_tokens,
        budget=backend.n_ctx - params.max_tokens - roleplay.PROMPT_SLACK,
    )  # fmt: skip
    return _Job(req, profile, backend, prompt, params)


def _choice_params(job: _Job, index: int) -> GenParams:
    return job.params.with_(seed=protocol.choice_seed(job.params.seed, index))


def _complete(job: _Job) -> dict[str, Any]:
    """The whole reply: ``n`` choices, generated one after another."""
    choices: list[tuple[str, str | None]] = []
    prompt_tokens = completion_tokens = 0
    for index in range(job.req.choices):
        done = job.backend.complete(job.prompt.messages, _choice_params(job, index))
        raw = done.text
        if job.req.wants_thoughts:
            text = raw
        else:
            f = ThoughtFilter(job.profile.short_name)
            text = f.feed(raw) + f.finish()
        choices.append((text, done.finish_reason))
        if index == 0:  # the prompt is counted once, as OpenAI does
            prompt_tokens = (
                done.prompt_tokens if done.prompt_tokens is not None else job.prompt_tokens()
            )
        completion_tokens += (
            done.completion_tokens
            if done.completion_tokens is not None
            else job.backend.count_tokens(raw)
        )
    (text, reason), *more = choices
    return protocol.completion_body(
        job.id,
        job.model,
        text,
        reason,
        protocol.usage(prompt_tokens, completion_tokens),
        more=more,
    )


_DONE = object()


async def _until_disconnected(request: Request, chunks: Iterator[str]):
    """Stream ``chunks`` (made in a worker thread) until they end or the client hangs up.

    A watcher waits for the client's ``http.disconnect`` (``request.is_disconnected()`` cannot
    see it behind an HTTP middleware); a client that went away closes the generator at once,
    which cancels its sequence in the model's batch and frees the slot for a waiting request.
    """
    gone = asyncio.Event()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            await asyncio.sleep(0.05)  # a replayed body message: do not spin
        gone.set()

    watcher = asyncio.ensure_future(watch())
    try:
        while not gone.is_set():
            chunk = await run_in_threadpool(next, chunks, _DONE)
            if chunk is _DONE:
                return
            yield chunk
    finally:
        watcher.cancel()
        with anyio.CancelScope(shield=True):
            # a step cancelled mid-way still runs in its worker thread: close once it returns
            for _ in range(3000):
                if not getattr(chunks, "gi_running", False):
                    break
                await asyncio.sleep(0.01)
            with contextlib.suppress(ValueError):
                chunks.close()


def _sse(data: dict[str, Any] | str) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n"


def _stream(job: _Job) -> Iterator[str]:
    """Server-sent events: each choice in turn (``n > 1``), then usage if asked, then
    ``[DONE]``. Any failure becomes an error event followed by ``[DONE]``, so a client
    always sees the stream end."""
    created = int(time.time())
    completion_tokens = 0
    try:
        for index in range(job.req.choices):
            completion_tokens += yield from _stream_choice(job, index, created)
    except CharliteError as exc:
        err = APIError(500, str(exc), type="server_error", code="model_unavailable")
        yield _sse(err.body())
        yield _sse("[DONE]")
        return
    except Exception as exc:  # noqa: BLE001 - any failure ends the stream cleanly
        log.exception("a streamed reply failed")
        err = APIError(500, f"the reply failed: {type(exc).__name__}: {exc}", type="server_error")
        yield _sse(err.body())
        yield _sse("[DONE]")
        return
    if job.req.include_usage:
        tokens = protocol.usage(job.prompt_tokens(), completion_tokens)
        yield _sse(protocol.chunk_body(job.id, job.model, created, None, usage=tokens))
    yield _sse("[DONE]")


def _stream_choice(job: _Job, index: int, created: int) -> Generator[str, None, int]:
    """The events of choice ``index``; returns its completion tokens."""
    f = None if job.req.wants_thoughts else ThoughtFilter(job.profile.short_name)

    def event(delta: dict[str, Any] | None, reason: str | None = None) -> str:
        return _sse(protocol.chunk_body(job.id, job.model, created, delta, reason, index=index))

    yield event({"role": "assistant", "content": ""})
    raw: list[str] = []
    reason = None
    deltas = job.backend.stream(job.prompt.messages, _choice_params(job, index))
    try:
        for delta in deltas:
            raw.append(delta.text)
            reason = delta.finish_reason or reason
            text = delta.text if f is None else f.feed(delta.text)
            if text:
                yield event({"content": text})
    finally:
        close = getattr(deltas, "close", None)
        if close:
            close()  # ends the generation (and frees the model) however this stream ends
    rest = "" if f is None else f.finish()
    if rest:
        yield event({"content": rest})
    yield event({}, reason or "stop")
    return job.backend.count_tokens("".join(raw)) if raw else 0
