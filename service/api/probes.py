"""``/v1/knowledge-bases/{kb_id}/probes``: golden questions the service asks on a schedule, with their results."""

from __future__ import annotations

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from service.api.hooks import require_json
from service.audit import audited
from service.auth import ADMINS_ONLY, Principal
from service.errors import problem_responses
from service.models import Probe, ProbeCreate, ProbeList
from service.quality.probes import Probes

__all__ = ["ProbeController"]

_ERRORS = problem_responses(400, 401, 403, 404, 503)


class ProbeController(Controller):
    path = "/knowledge-bases/{kb_id:str}/probes"
    tags = ["quality"]

    @post(
        opt={**ADMINS_ONLY, **audited("probe.create", target="id")},
        before_request=require_json,
        summary="Add a golden-question probe: a question, and the document or text its answer must hold",
        responses=problem_responses(400, 401, 403, 404, 413, 415),
    )
    async def create(
        self,
        kb_id: FromPath[str],
        data: JSONBody[ProbeCreate],
        principal: NamedDependency[Principal],
        probes: NamedDependency[Probes],
    ) -> Probe:
        return await probes.create(principal, kb_id, data)

    @get(summary="The knowledge base's probes with their last result", responses=_ERRORS)
    async def list(
        self, kb_id: FromPath[str], principal: NamedDependency[Principal], probes: NamedDependency[Probes]
    ) -> ProbeList:
        return await probes.list_all(principal, kb_id)

    @delete(
        "/{probe_id:str}",
        opt={**ADMINS_ONLY, **audited("probe.delete", target="probe_id")},
        summary="Remove a probe",
        responses=_ERRORS,
    )
    async def remove(
        self,
        kb_id: FromPath[str],
        probe_id: FromPath[str],
        principal: NamedDependency[Principal],
        probes: NamedDependency[Probes],
    ) -> None:
        await probes.delete(principal, kb_id, probe_id)
