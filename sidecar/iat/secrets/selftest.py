"""`iat-sidecar secrets-selftest` (hidden): checks that this build can keep and read secrets, in the frozen binary
above all, where keyring backends are easy to lose. Prints one JSON line; never a value.

- no --project: a throwaway project in a temporary home; a random secret stored with secrets.set, revealed,
  compared and deleted;
- --home/--project/--provider/--name/--expect-sha256: reveals a secret stored earlier (e.g. through `serve`) and
  compares its SHA-256 with the one given.
"""

from __future__ import annotations

import hashlib
import json
import secrets as random
import tempfile
from pathlib import Path

from iat.errors import IATError


def _backend_name() -> str | None:
    try:
        from iat.secrets.vault import usable_keyring

        backend = usable_keyring()
        return f"{type(backend).__module__}.{type(backend).__name__}"
    except IATError:
        return None


def run_selftest(args, settings_for) -> int:
    from iat.app import App
    from iat.context import Session
    from iat.rpc.protocol import Dispatcher
    from iat.secrets.repo import reveal

    report: dict = {"backend": _backend_name()}
    with tempfile.TemporaryDirectory(prefix="iat-secrets-selftest-") as scratch:
        home = args.home if args.project else str(Path(scratch) / "home")
        app = App(settings_for(home))
        try:
            call = Dispatcher(app).call
            session = Session("cli", authenticated=True)
            if args.project:
                value = reveal(app, app.projects.open(args.project), args.provider, args.name)
                report["ok"] = hashlib.sha256(value.encode()).hexdigest() == args.expect_sha256
            else:
                value = random.token_urlsafe(32)
                call("projects.create", {"slug": "selftest", "name": "Secrets self-test"}, session)
                row = call("secrets.set", {"slug": "selftest", "provider_code": "selftest", "secret_name": "probe",
                                           "value": value}, session)
                report["kms_key_ref_kind"] = row["kms_key_ref"].split(":", 1)[0]
                report["ok"] = reveal(app, app.projects.open("selftest"), "selftest", "probe") == value
                call("secrets.delete", {"slug": "selftest", "provider_code": "selftest", "secret_name": "probe"},
                     session)
        except IATError as exc:
            report.update(ok=False, error=exc.to_object())
        finally:
            app.close()
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1
