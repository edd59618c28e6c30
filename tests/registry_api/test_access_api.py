"""Access management over HTTP (issue 10, section 5): list tokens, remove a grant, disable a principal."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from registry_api.conftest import Server


def test_an_admin_lists_removes_and_disables_over_http(
    server: Server, admin: httpx.Client, user: Callable[..., httpx.Client]
) -> None:
    rita = user("rita", "reader")
    [token] = admin.get("/v1/principals/rita/tokens").json()
    assert (token["principal"], token["revoked"], token["expires_at"]) == ("rita", False, None)
    assert set(token) == {"token_id", "principal", "created_at", "expires_at", "revoked"}
    assert rita.get("/v1/principals/rita/tokens").status_code == 403
    assert admin.get("/v1/principals/nobody/tokens").status_code == 404

    assert rita.get("/v1/models").status_code == 200
    assert admin.delete("/v1/principals/rita/grants", params={"model": "*"}).status_code == 204
    assert rita.get("/v1/models").json() == []  # authenticated still, but reads nothing
    assert admin.delete("/v1/principals/rita/grants").status_code == 404  # nothing left to remove

    assert admin.post("/v1/principals/rita/disable").json() == {"name": "rita", "disabled": True}
    refused = rita.get("/v1/models")
    assert refused.status_code == 401 and "principal rita is disabled" in refused.json()["error"]
    assert admin.post("/v1/principals/rita/enable").status_code == 200
    assert rita.get("/v1/models").status_code == 200

    actions = [(e.action, e.subject) for e in server.registry.audit.entries()][-3:]
    assert actions == [("access.revoke", "rita"), ("principal.disable", "rita"), ("principal.enable", "rita")]
