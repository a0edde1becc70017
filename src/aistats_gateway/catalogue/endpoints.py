"""``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /v1/videos/models``
(``GET /v1/batches/models`` is in ``batches/``).

``/v1/models`` keeps the seed's page (``ok``, ``limit``, ``offset``, ``models``, ``total``) and adds the
same page in OpenAI's list shape (``object: "list"``, ``data``), so OpenAI clients list it too.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from aistats_gateway.auth.dependencies import Principal, require_key
from aistats_gateway.catalogue import queries
from aistats_gateway.catalogue.schema import ENDPOINTS, ORGANISATIONS
from aistats_gateway.catalogue.schemas import CapabilityList, ModelDetail, ModelsPage
from aistats_gateway.http.errors import APIError
from aistats_gateway.http.responses import ERRORS, NOT_FOUND, JSONBytes

router = APIRouter(prefix="/v1", tags=["Catalogue"], responses=ERRORS)

ListParam = Annotated[list[str] | None, Query()]
# Bounded so the echoed value always fits the JSON integer the response promises (an unbounded
# offset above 2**64 made the serialiser fail with a 500).
MAX_OFFSET = 2**31 - 1

_PARAMS_DOC = (
    "Supported-parameter filter. Repeat the parameter or pass a comma-separated list. Canonical names "
    "and aliases from supported_parameters_detail are accepted ({examples}). A model is listed when one "
    "of its providers supports every requested parameter."
)


@router.get(
    "/models",
    response_model=ModelsPage,
    summary="List all gateway models",
    description="Paginated model catalogue. `include_data=false` omits input_types/output_types; "
    "`include_gateway=false` omits endpoints/providers.",
)
async def list_models(
    request: Request,
    _: Principal = Depends(require_key),
    provider: Annotated[list[str] | None, Query(description="Provider id(s); repeat or comma-separate")] = None,
    organisation: Annotated[list[str] | None, Query(
        description="Organisation id(s); repeat or comma-separate. One of: " + ", ".join(ORGANISATIONS))] = None,
    include_endpoints: Annotated[list[str] | None, Query(
        description="Only models with at least one of these endpoints: " + ", ".join(ENDPOINTS))] = None,
    exclude_endpoints: Annotated[list[str] | None, Query(
        description="Exclude models with any of these endpoints: " + ", ".join(ENDPOINTS))] = None,
    input_types: Annotated[list[str] | None, Query(description="At least one of these input types")] = None,
    output_types: Annotated[list[str] | None, Query(description="At least one of these output types")] = None,
    include_rumoured: bool = True,
    include_deprecated: bool = True,
    include_retired: bool = True,
    include_data: bool = True,
    include_gateway: bool = True,
    limit: Annotated[int, Query(ge=1, le=250, description="Page size, 1..250")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Models to skip, 0..2147483647")] = 0,
) -> Response:
    q = queries.ModelQuery(
        providers=frozenset(queries.split_values(provider)),
        organisations=queries.organisations_param(organisation),
        include_endpoints=queries.endpoints_param(include_endpoints, "include_endpoints"),
        exclude_endpoints=queries.endpoints_param(exclude_endpoints, "exclude_endpoints"),
        input_types=frozenset(queries.split_values(input_types)),
        output_types=frozenset(queries.split_values(output_types)),
        include_rumoured=include_rumoured,
        include_deprecated=include_deprecated,
        include_retired=include_retired,
        include_data=include_data,
        include_gateway=include_gateway,
        limit=limit,
        offset=offset,
    )
    snap = await request.app.state.gateway.catalogue.get()
    return JSONBytes(queries.list_models(snap, q))


@router.get(
    "/models/{model_id:path}",
    response_model=ModelDetail,
    responses=NOT_FOUND,
    summary="Retrieve a model",
    description="One model by id or alias (the id may contain a slash: openai/gpt-5): the OpenAI model object "
    "(id, object, created, owned_by) and its catalogue entry.",
)
async def get_model(model_id: str, request: Request, _: Principal = Depends(require_key)) -> Response:
    snap = await request.app.state.gateway.catalogue.get()
    body = queries.get_model(snap, model_id)
    if body is None:
        raise APIError(404, f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
    return JSONBytes(body)


@router.get(
    "/videos/models",
    response_model=CapabilityList,
    summary="List video model capabilities",
    tags=["Videos"],
)
async def list_video_models(
    request: Request,
    _: Principal = Depends(require_key),
    params: Annotated[list[str] | None, Query(
        description=_PARAMS_DOC.format(examples="resolution, size, duration, duration_seconds"))] = None,
) -> Response:
    snap = await request.app.state.gateway.catalogue.get()
    return JSONBytes(queries.capability_list(snap, "video.generation", queries.split_values(params)))
