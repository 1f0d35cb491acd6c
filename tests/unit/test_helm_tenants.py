"""Tenant operators in the Helm chart: `global.tuneline.tenants` gives each tenant the NATS user
`operator-<tenant>` with exactly the permissions `services/core/security/access.py` grants it (the embedded
stack's `tuneline up --secure --tenant`), its own password in the users Secret and in the NATS
pods' environment; a bad or a service's name is refused at render time."""

from __future__ import annotations

import helm_python as helm
import pytest

from services.core.security.access import ADMIN_USER, service_access
from services.core.security.nats_config import auth_conf
from tests.support.helm import manifests, of_kind, render, validate

TENANTS = ["acme", "beta-2"]


def tenants(*names: str) -> dict[str, object]:
    return {"global": {"tuneline": {"tenants": list(names)}}}


def test_each_tenant_gets_its_own_operator_with_the_permissions_of_access_py() -> None:
    docs = manifests(render(None, **tenants(*TENANTS)))
    for doc in docs:
        validate(doc)
    auth = of_kind(docs, "ConfigMap")["tl-nats-auth"]["data"]["auth.conf"]
    assert auth.strip() == auth_conf(service_access(TENANTS)).strip()
    assert 'user: "operator-acme"' in auth and "$TUNELINE_NATS_PASSWORD_OPERATOR-BETA-2" in auth
    # acme's operator may send for acme, never for beta-2
    acme = auth.split('user: "operator-acme"')[1].split('user: "operator-beta-2"')[0]
    assert '"tuneline.events.dataset.submitted.acme"' in acme
    assert "submitted.beta-2" not in acme and '"tuneline.events.dataset.submitted"' not in acme
    users = of_kind(docs, "Secret")["tl-nats-users"]
    assert set(users["data"]) == {*service_access(TENANTS), ADMIN_USER}


def test_without_tenants_the_chart_has_no_tenant_operator() -> None:
    auth = of_kind(manifests(render(None)), "ConfigMap")["tl-nats-auth"]["data"]["auth.conf"]
    assert "operator-" not in auth.replace("operator-<tenant>", "")


@pytest.mark.parametrize(
    ("name", "problem"),
    [("Acme", "is not a tenant name"), ("a.b", "is not a tenant name"), ("serving", "is a service's name")],
)
def test_a_bad_tenant_name_is_refused_with_the_value_to_fix(name: str, problem: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=rf'global\.tuneline\.tenants: "{name}" {problem}'):
        render(None, **tenants("acme", name))
