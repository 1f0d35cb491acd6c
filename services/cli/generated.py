"""Files generated from code: `tuneline schemas export` and `tuneline infra`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from schemas.specification import asyncapi_document, event_json_schemas
from services.cli.session import console, fail

schemas_app = typer.Typer(help="JSON Schema and AsyncAPI documents.", no_args_is_help=True)


GENERATED = Path(__file__).resolve().parents[2] / "schemas" / "generated"


# -- schemas ---------------------------------------------------------------------------------
def _generated_files() -> dict[str, str]:
    files = {
        f"{name}.schema.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in event_json_schemas().items()
    }
    files["asyncapi.json"] = json.dumps(asyncapi_document(), indent=2, sort_keys=True) + "\n"
    return files


@schemas_app.command("export")
def schemas_export(
    out: Annotated[
        Path, typer.Option(help="Output directory", show_default="<repository>/schemas/generated")
    ] = GENERATED,
    check: Annotated[
        bool, typer.Option(help="Fail if the files on disk differ from the models (CI)")
    ] = False,
) -> None:
    """Write the JSON Schema of every event and the AsyncAPI document to schemas/generated/."""
    files = _generated_files()
    if check:
        stale = [n for n, text in files.items() if not (out / n).exists() or (out / n).read_text() != text]
        extra = sorted(p.name for p in out.glob("*.json") if p.name not in files)
        if stale or extra:
            raise fail(
                f"schemas/generated is out of date ({', '.join(stale + extra)}); "
                "run `make schemas` and commit the result"
            )
        console.print(f"[green]schemas/generated is up to date[/] ({len(files)} files)")
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
    for path in out.glob("*.json"):
        if path.name not in files:
            path.unlink()
    console.print(f"wrote {len(files)} files to {out}")


# -- infra ------------------------------------------------------------------------------------
infra_app = typer.Typer(
    help="Deployment files generated from code (NATS permissions, alerting rules).", no_args_is_help=True
)


def _infra_files() -> dict[str, str]:
    from services.core.alert_rules import rules_yaml
    from services.core.security.nats_config import auth_conf, helm_users_template

    auth = auth_conf()
    alerting = rules_yaml()
    return {
        "infra/nats/auth.conf": auth,
        "deploy/helm/tuneline/files/nats-auth.conf": auth,
        "deploy/helm/tuneline/templates/_nats_users.tpl": helm_users_template(),
        "infra/prometheus/rules.yaml": alerting,
        "deploy/helm/tuneline/files/prometheus-rules.yaml": alerting,
    }


@infra_app.command("export")
def infra_export(
    root: Annotated[
        Path, typer.Option(help="Repository root", show_default="this checkout")
    ] = GENERATED.parents[1],
    check: Annotated[bool, typer.Option(help="Fail if the files on disk differ (CI)")] = False,
) -> None:
    """Write the NATS users and permissions and the Prometheus alerting rules to infra/ and the Helm chart.

    They are generated from the access table in services/core/security/access.py and from the
    routes' default objectives (schemas/slo.py, services/core/alert_rules.py).
    """
    files = _infra_files()
    if check:
        stale = [n for n, text in files.items() if not (root / n).exists() or (root / n).read_text() != text]
        if stale:
            raise fail(f"{', '.join(stale)} out of date; run `tuneline infra export` and commit the result")
        console.print(f"[green]NATS permissions and alerting rules are up to date[/] ({len(files)} files)")
        return
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    console.print(f"wrote {', '.join(files)}")


@infra_app.command("secrets")
def infra_secrets(
    out: Annotated[
        Path, typer.Option(help="Where compose.yaml lives", show_default="<repository>/infra")
    ] = GENERATED.parents[1] / "infra",
) -> None:
    """Passwords (infra/.env) and a development CA and NATS certificate (infra/tls/) for compose.

    Existing passwords and certificates are kept, so running it again changes nothing.
    """
    from services.core.security.access import ADMIN_USER, password_variable, service_access
    from services.core.security.pki import make_server_tls, new_password

    out.mkdir(parents=True, exist_ok=True)
    env_file = out / ".env"
    values: dict[str, str] = {}
    if env_file.exists():
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    wanted = [password_variable(u) for u in [*service_access(), ADMIN_USER]]
    for name in [*wanted, "TUNELINE_POSTGRES_PASSWORD", "TUNELINE_MINIO_PASSWORD"]:
        values.setdefault(name, new_password())
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    env_file.chmod(0o600)
    tls = out / "tls"
    if not (tls / "server.pem").exists():
        make_server_tls(tls, hosts=("nats", "localhost", "127.0.0.1"))
    operator = out / ".env.operator"
    operator.write_text(
        "TUNELINE_NATS_URL=tls://127.0.0.1:4222\n"
        "TUNELINE_NATS_USER=operator\n"
        f"TUNELINE_NATS_PASSWORD={values[password_variable('operator')]}\n"
        f"TUNELINE_NATS_TLS_CA_FILE={(tls / 'ca.pem').resolve()}\n"
    )
    operator.chmod(0o600)
    console.print(f"wrote {env_file}, {operator} and {tls}/ (CA, NATS certificate)")
