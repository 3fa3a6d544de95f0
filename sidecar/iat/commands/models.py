"""models.*: the ONNX models folders (iat.models): list, install from a local file, download when the user asks,
remove. Models belong to the app, not to a project: their changes are recorded in the app's audit trail
(app_audit_events, what `audit.list` without a slug shows), since a project's audit_events live in its own
database. The record is written after the manifest changed: a model folder is no database transaction.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from iat.cancel import Cancelled
from iat.commands.common import AbsolutePath, NoParams
from iat.errors import (
    Conflict, Forbidden, NotFound, PayloadTooLarge, ProviderAuthFailed, ProviderBadRequest, ProviderError,
    ProviderTimeout, ProviderUnavailable, RateLimited, ShuttingDown,
)
from iat.lazy import lazy_import
from iat.models.download import DEFAULT_MAX_BYTES, URL_MAX, URL_PATTERN, check_url
from iat.models.manifest import NAME_PATTERN, Arch, IOSignature, Kind
from iat.registry import Params, Result, command

audit = lazy_import("iat.audit.repo")
download = lazy_import("iat.models.download")
sessions = lazy_import("iat.models.sessions")

ModelName = Annotated[str, StringConstraints(pattern=NAME_PATTERN),
                      Field(description="The model's name: lowercase letters, digits, '.', '_', '-'")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$"),
                   Field(description="The file's SHA-256 (hex); a file with another one is refused")]
# The pattern is checked by check_url rather than by StringConstraints so that a refusal says why in words.
Url = Annotated[str, StringConstraints(max_length=URL_MAX), AfterValidator(check_url),
                Field(description="An http or https URL with no credentials in it",
                      json_schema_extra={"pattern": URL_PATTERN})]


class ModelRef(Params):
    name: ModelName


class _NewModel(Params):
    name: ModelName
    kind: Kind = Field(description="segmentation (background removal), matting (the refine pass) or "
                                   "super_resolution (upscale)")
    arch: Arch | None = Field(None, description="Segmentation models only, and required for them: the rembg "
                                                "session that pre- and post-processes for it")
    sha256: Sha256
    license: str = Field("", max_length=200, description="The model's license, as the user knows it")
    replace: bool = Field(False, description="Replace an installed model of the same name (else conflict)")

    @model_validator(mode="after")
    def _arch_fits_kind(self):
        if self.kind == "segmentation" and self.arch is None:
            raise ValueError("a segmentation model needs its arch (u2net, isnet or birefnet)")
        if self.kind != "segmentation" and self.arch is not None:
            raise ValueError("arch applies to segmentation models only")
        return self


class InstallParams(_NewModel):
    path: AbsolutePath = Field(description="The model file (.onnx) on this machine; it is copied")


class DownloadParams(_NewModel):
    url: Url
    max_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1, le=64 << 30,
                           description="Refuse a download larger than this (checked against the Content-Length "
                                       "before the body, and while it comes)")


class ModelOut(Result):
    name: str
    kind: Kind
    arch: Arch | None
    scale: int | None = Field(description="Super-resolution models: output size / input size")
    file: str
    sha256: str
    size: int
    io: IOSignature = Field(description="The model's inputs and outputs, as onnxruntime reads them")
    license: str
    source: str = Field(description="Where it came from: the URL it was downloaded from, or 'file'")
    installed_at: str
    location: Literal["user", "bundled"] = Field(description="user: the user's models folder (IAT_MODELS_DIR); "
                                                             "bundled: shipped with the installer, read-only")
    path: str
    present: bool = Field(description="Whether the file is there (false: the manifest names a missing file)")


class ExecutionProviders(Result):
    available: list[str] = Field(description="What the installed onnxruntime offers")
    chosen: list[str] = Field(description="What sessions ask for, best first (IAT_ONNX_PROVIDERS narrows it)")


class ModelList(Result):
    items: list[ModelOut]
    models_dir: str = Field(description="The user's models folder")
    bundled_dir: str | None = Field(description="The folder of the models shipped with the installer, if any")
    execution_providers: ExecutionProviders
    intra_op_threads: int = Field(description="Threads one inference uses (one core is left free)")


def _out(model) -> ModelOut:
    return ModelOut(**model.to_dict(), path=str(model.path), present=model.path.is_file())


def _record(ctx, event: str, model) -> None:
    payload = {"name": model.name, "kind": model.entry.kind, "sha256": model.entry.sha256,
               "size": model.entry.size, "source": model.entry.source}
    ctx.app.app_store.write(audit.record_app, None, ctx.app.current_user()["id"], event, payload)
    ctx.app.events.publish(event, payload)


@command("models.list", params=NoParams, result=ModelList, route=("GET", "/api/models"), errors=(Conflict,))
def list_models(ctx, p: NoParams) -> ModelList:
    """Lists the installed models (the user's, then the shipped ones it does not replace), the folders, and the
    onnxruntime execution providers available and chosen."""
    import onnxruntime as ort

    store = ctx.app.models
    available = ort.get_available_providers()
    return ModelList(items=[_out(m) for m in store.list()], models_dir=str(store.user_dir),
                     bundled_dir=str(store.bundled_dir) if store.bundled_dir else None,
                     execution_providers=ExecutionProviders(available=available,
                                                            chosen=sessions.execution_providers(available)),
                     intra_op_threads=sessions.intra_op_threads())


@command("models.get", params=ModelRef, result=ModelOut, route=("GET", "/api/models/{name}"),
         errors=(NotFound, Conflict))
def get_model(ctx, p: ModelRef) -> ModelOut:
    """Returns one model by name (the user's before a shipped one of the same name)."""
    return _out(ctx.app.models.get(p.name))


@command("models.install", params=InstallParams, result=ModelOut, route=("POST", "/api/models"), mutating=True,
         errors=(NotFound, Forbidden, Conflict))
def install_model(ctx, p: InstallParams) -> ModelOut:
    """Installs a model from a file on this machine: copied into the user's models folder, refused unless its
    sha256 is the one given and onnxruntime loads it with the inputs and outputs its kind needs."""
    model = ctx.app.models.install(p.path, name=p.name, kind=p.kind, sha256=p.sha256, arch=p.arch,
                                   license=p.license, source="file", replace=p.replace)
    _record(ctx, "model.installed", model)
    return _out(model)


@command("models.download", params=DownloadParams, result=ModelOut, route=("POST", "/api/models/download"),
         mutating=True, errors=(NotFound, Conflict, PayloadTooLarge, RateLimited, ProviderAuthFailed,
                                ProviderBadRequest, ProviderUnavailable, ProviderTimeout, ProviderError,
                                ShuttingDown))
def download_model(ctx, p: DownloadParams) -> ModelOut:
    """Downloads a model from a URL and installs it as models.install does; progress comes as
    `model.download.progress` events ({name, received, total}). The only way the product downloads a model."""
    app = ctx.app

    def progress(received: int, total: int | None) -> None:
        app.events.publish("model.download.progress", {"name": p.name, "received": received, "total": total})

    try:
        model = download.download(app.models, p.url, name=p.name, kind=p.kind, sha256=p.sha256, arch=p.arch,
                                  license=p.license, replace=p.replace, max_bytes=p.max_bytes, progress=progress,
                                  cancel=app.stopping)
    except Cancelled:
        raise ShuttingDown("the sidecar is shutting down: the download was stopped and nothing was installed",
                           details={"name": p.name, "url": p.url}) from None
    _record(ctx, "model.installed", model)
    return _out(model)


@command("models.remove", params=ModelRef, result=ModelOut, route=("DELETE", "/api/models/{name}"), mutating=True,
         errors=(NotFound, Conflict))
def remove_model(ctx, p: ModelRef) -> ModelOut:
    """Removes a model from the user's models folder (one shipped with the installer cannot be removed)."""
    model = ctx.app.models.remove(p.name)
    _record(ctx, "model.removed", model)
    return _out(model)
