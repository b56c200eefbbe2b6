"""GET /v1/models, POST /tokenize, POST /detokenize."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from kvserve.server.body import read_body
from kvserve.server.errors import model_not_found
from kvserve.server.protocol import DetokenizeRequest, TokenizeRequest
from kvserve.server.responses import DetokenizeResponse, ModelCard, ModelList, TokenizeResponse
from kvserve.server.sampling import check_token_ids
from kvserve.server.state import ServerState, server_state

router = APIRouter()


def _card(state: ServerState, name: str) -> ModelCard:
    """What is known of `name` without loading it: the engine's facts only once loaded."""
    host = state.models
    version = host.current.get(name)
    info = version.engine.info if version is not None else None
    root = (info.model_path if info is not None else None) or name
    return ModelCard(id=name, created=state.started, root=root, max_model_len=info.max_model_len if info else None,
                     version=host.label(name), state=host.state(name).value)


def _json(model: object) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")  # type: ignore[attr-defined]


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    state = server_state(request)
    return _json(ModelList(data=[_card(state, name) for name in state.models.specs]))


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> Response:
    state = server_state(request)
    if model_id not in state.models.specs:
        raise model_not_found(model_id)
    return _json(_card(state, model_id))


@router.post("/tokenize")
async def tokenize(request: Request) -> Response:
    state = server_state(request)
    body = await read_body(request, TokenizeRequest)
    version = await state.model_for(request, body.model)
    if body.messages is not None:
        tokens = version.chat_prompt(body.messages, body.add_generation_prompt)
    else:
        tokens = version.encode(body.prompt or "", add_special_tokens=body.add_special_tokens)
    return _json(TokenizeResponse(tokens=tokens, count=len(tokens), max_model_len=version.engine.max_model_len))


@router.post("/detokenize")
async def detokenize(request: Request) -> Response:
    state = server_state(request)
    body = await read_body(request, DetokenizeRequest)
    version = await state.model_for(request, body.model)
    check_token_ids(body.tokens, version.engine.vocab_size, "tokens")
    return _json(DetokenizeResponse(prompt=version.decode(body.tokens)))
