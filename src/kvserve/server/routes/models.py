"""GET /v1/models, POST /tokenize, POST /detokenize."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from kvserve.server.body import read_body
from kvserve.server.protocol import DetokenizeRequest, TokenizeRequest
from kvserve.server.responses import DetokenizeResponse, ModelCard, ModelList, TokenizeResponse
from kvserve.server.sampling import check_token_ids
from kvserve.server.state import ServerState, server_state

router = APIRouter()


def _card(state: ServerState) -> ModelCard:
    info = state.engine.info
    return ModelCard(id=state.model_name, created=state.started, root=info.model_path or state.model_name,
                     max_model_len=info.max_model_len)


def _json(model: object) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")  # type: ignore[attr-defined]


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    return _json(ModelList(data=[_card(server_state(request))]))


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> Response:
    state = server_state(request)
    state.resolve_model(model_id)
    return _json(_card(state))


@router.post("/tokenize")
async def tokenize(request: Request) -> Response:
    state = server_state(request)
    body = await read_body(request, TokenizeRequest)
    state.resolve_model(body.model)
    if body.messages is not None:
        tokens = state.chat_prompt(body.messages, body.add_generation_prompt)
    else:
        tokens = state.encode(body.prompt or "", add_special_tokens=body.add_special_tokens)
    return _json(TokenizeResponse(tokens=tokens, count=len(tokens), max_model_len=state.engine.max_model_len))


@router.post("/detokenize")
async def detokenize(request: Request) -> Response:
    state = server_state(request)
    body = await read_body(request, DetokenizeRequest)
    state.resolve_model(body.model)
    check_token_ids(body.tokens, state.engine.vocab_size, "tokens")
    return _json(DetokenizeResponse(prompt=state.decode(body.tokens)))
