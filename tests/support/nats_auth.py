"""NKey pairs and decentralized-JWT credentials for tests, made the way `nsc` makes them.

An operator signs an account (with JetStream limits), the account signs a user; nats-server runs
in operator mode with the account preloaded (`resolver: MEMORY`), and the user connects with a
`.creds` file: its JWT plus its NKey seed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import nkeys


def keypair(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(subject: nkeys.KeyPair, issuer: nkeys.KeyPair, name: str, nats: dict[str, Any]) -> str:
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject.public_key.decode(),
        "nats": {**nats, "version": 2},
    }
    claims["jti"] = (
        base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest())
        .decode()
        .rstrip("=")
    )
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = _b64(issuer.sign(f"{header}.{body}".encode()))
    return f"{header}.{body}.{signature}"


def operator_mode(directory: Path, user: str) -> tuple[str, Path]:
    """(server configuration lines, the user's .creds file)."""
    operator = keypair(nkeys.PREFIX_BYTE_OPERATOR)
    system = keypair(nkeys.PREFIX_BYTE_ACCOUNT)  # JetStream needs a system account in operator mode
    account = keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    person = keypair(nkeys.PREFIX_BYTE_USER)
    unlimited = {"subs": -1, "conn": -1, "leaf": -1, "imports": -1, "exports": -1, "data": -1, "payload": -1}
    jetstream = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    operator_jwt = jwt(operator, operator, "tuneline-test", {"type": "operator"})
    account_jwt = jwt(
        account, operator, "tuneline", {"type": "account", "limits": {**unlimited, **jetstream}}
    )
    system_jwt = jwt(system, operator, "SYS", {"type": "account", "limits": unlimited})
    user_jwt = jwt(
        person, account, user, {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
    )
    creds = directory / f"{user}.creds"
    creds.write_text(
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{person.seed.decode()}\n------END USER NKEY SEED------\n"
    )
    config = (
        f'operator: "{operator_jwt}"\n'
        f'system_account: "{system.public_key.decode()}"\n'
        "resolver: MEMORY\n"
        f'resolver_preload: {{ {account.public_key.decode()}: "{account_jwt}", '
        f'{system.public_key.decode()}: "{system_jwt}" }}\n'
    )
    return config, creds
