"""The REST contract on the real process over HTTP: what the server answers is what GET /openapi.json says.

Path parameters come from the path only, every status a bad request gets is declared for its operation, a 405
names the allowed methods, and the constraints the server enforces (absolute project roots, cursors, S3 names,
confirmation) are in the schema. scripts/contract runs an independent fuzzer over the same document.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from iat.pagination import CURSOR_PATTERN
from iat.storage.policy import BUCKET_PATTERN

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def server(tmp_path_factory, proto):
    process = proto.SidecarProcess(("http",), tmp_path_factory.mktemp("contract") / "home")
    try:
        process.connect("http")
        yield process
        assert process.stop() == 0
        unexpected = [line for line in process.log_text().splitlines() if "unexpected error" in line]
        assert not unexpected, unexpected[:3]
    finally:
        process.cleanup()


@pytest.fixture(scope="module")
def web(server):
    return server.connect("http")


@pytest.fixture(scope="module")
def doc(web) -> dict:
    resp = web.http("GET", "/openapi.json")
    assert resp.status == 200
    return resp.json


@pytest.fixture
def project(web, proto) -> dict:
    slug = proto.unique_slug("c")
    resp = web.http("POST", "/api/projects", {"slug": slug, "name": "Contract"})
    assert resp.status == 200, resp.body
    return resp.json


def operation(doc: dict, method: str, path: str) -> dict:
    """The documented operation a concrete request path falls under."""
    path = path.split("?", 1)[0]
    for template, ops in doc["paths"].items():
        if re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", template), path) and method.lower() in ops:
            return ops[method.lower()]
    raise AssertionError(f"{method} {path} is not in the document")


def resolve(doc: dict, schema: dict) -> dict:
    ref = schema.get("$ref")
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def audit_trail(web, slug: str) -> list:
    resp = web.http("GET", f"/api/audit?slug={slug}&limit=500")
    assert resp.status == 200, resp.body
    return resp.json["items"]


# --- 405 ---


@pytest.mark.parametrize("method,path", [("TRACE", "/api/projects"), ("PUT", "/api/system/ping"),
                                         ("POST", "/api/projects/some-slug/storage"), ("PATCH", "/openapi.json")])
def test_a_405_names_the_allowed_methods(web, proto, doc, method, path):
    resp = web.http(method, path, {} if method in ("POST", "PUT", "PATCH") else None)
    error = proto.http_error(resp, 405, name="method_not_allowed")
    allowed = {m.strip() for m in resp.headers["allow"].split(",")}
    assert allowed and allowed == set(error["data"]["details"]["allowed"])
    template = next((t for t in doc["paths"] if re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", t), path)), None)
    if template is not None:  # the allowed methods are the documented ones
        assert {m.lower() for m in allowed} == set(doc["paths"][template])
    assert method not in allowed


def test_the_405_response_and_its_allow_header_are_documented(doc):
    response = doc["components"]["responses"]["MethodNotAllowed"]
    assert response["headers"]["Allow"]["required"] is True
    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


# --- path parameters come from the path only ---


def test_patch_with_the_slug_in_the_body_renames_nothing(web, proto, project):
    slug = project["slug"]
    before = audit_trail(web, slug)
    proto.http_error(web.http("PATCH", f"/api/projects/{slug}", {"slug": "beta"}), 422, name="invalid_params")
    proto.http_error(web.http("PATCH", f"/api/projects/{slug}", {"slug": slug, "name": "X"}), 422,
                     name="invalid_params")  # even the same value: the body does not name the target
    assert web.http("GET", f"/api/projects/{slug}").json == project
    proto.http_error(web.http("GET", "/api/projects/beta"), 404, name="not_found")
    assert audit_trail(web, slug) == before


def test_archive_with_a_slug_in_the_body_is_refused(web, proto, project):
    slug = project["slug"]
    error = proto.http_error(web.http("POST", f"/api/projects/{slug}/archive", {"slug": [{}]}), 422,
                             name="invalid_params")
    assert error["data"]["details"]["errors"][0]["loc"] == ["slug"]
    assert web.http("GET", f"/api/projects/{slug}").json["status"] == "active"
    assert web.http("POST", f"/api/projects/{slug}/archive").json["status"] == "archived"  # no body at all: fine


@pytest.mark.parametrize("method,suffix", [("GET", "?slug=other"), ("DELETE", "?slug={slug}&confirm=true")])
def test_a_query_naming_a_path_parameter_is_refused(web, proto, project, method, suffix):
    slug = project["slug"]
    proto.http_error(web.http(method, f"/api/projects/{slug}" + suffix.format(slug=slug)), 422,
                     name="invalid_params")
    assert web.http("GET", f"/api/projects/{slug}").status == 200


def test_unknown_or_repeated_query_keys_and_a_query_on_a_body_route_are_refused(web, proto, project):
    slug = project["slug"]
    proto.http_error(web.http("GET", "/api/system/ping?verbose=1"), 422, name="invalid_params")
    proto.http_error(web.http("GET", f"/api/projects/{slug}/assets?limit=1&limit=2"), 422, name="invalid_params")
    proto.http_error(web.http("POST", f"/api/projects/{slug}/archive?force=1"), 422, name="invalid_params")
    assert web.http("GET", f"/api/projects/{slug}").json["status"] == "active"


def test_an_empty_patch_is_a_documented_no_op(web, doc, project):
    slug = project["slug"]
    before = audit_trail(web, slug)
    op = operation(doc, "PATCH", f"/api/projects/{slug}")
    assert op["requestBody"]["required"] is False
    body = resolve(doc, op["requestBody"]["content"]["application/json"]["schema"])
    assert "slug" not in body["properties"] and not body.get("required")
    assert body["additionalProperties"] is False
    for payload in ({}, None):
        resp = web.http("PATCH", f"/api/projects/{slug}", payload)
        assert resp.status == 200 and resp.json == project
    assert audit_trail(web, slug) == before


def test_no_body_schema_repeats_a_path_parameter(doc):
    for template, ops in doc["paths"].items():
        for method, op in ops.items():
            path_params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert path_params == set(re.findall(r"\{(\w+)\}", template)), (method, template)
            assert not path_params & {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
            if "requestBody" in op and template != "/rpc":
                body = resolve(doc, op["requestBody"]["content"]["application/json"]["schema"])
                assert not path_params & set(body.get("properties", {})), (method, template)


# --- every status the server answers is declared ---


def _bad_requests(slug: str, tmp: Path, limit: int) -> list[tuple]:
    """(method, path, body, headers, status): requests the server refuses, one per kind of refusal."""
    return [
        ("GET", f"/api/projects/{slug}", None, {"Authorization": "Bearer wrong"}, 401),
        ("POST", "/api/projects", {"slug": "x", "name": "X"}, {"Authorization": ""}, 401),
        ("GET", "/api/system/info", None, {"Host": "evil.example:80"}, 403),
        ("DELETE", f"/api/projects/{slug}?confirm=true", None, {"Origin": "https://evil.example"}, 403),
        ("GET", "/api/projects/no-such-project", None, None, 404),
        ("GET", f"/api/projects/{slug}/assets/00000000-0000-4000-8000-000000000000", None, None, 404),
        ("GET", "/api/users/nobody", None, None, 404),
        ("GET", "/api/audit?slug=no-such-project", None, None, 404),
        ("PUT", "/api/projects/no-such-project/storage", {}, None, 404),
        ("POST", "/api/projects", {"slug": slug, "name": "Again"}, None, 409),
        ("PUT", f"/api/projects/{slug}/storage", {"local_project_root": str(tmp / "elsewhere")}, None, 409),
        ("PUT", f"/api/projects/{slug}/storage", {"s3_enabled": True}, None, 409),  # no bucket stored
        ("POST", "/api/projects", b'{"slug": "x", "name": ', None, 400),
        ("PATCH", f"/api/projects/{slug}", b"\xff\xfe", None, 400),
        ("POST", "/api/projects", {"slug": "big", "name": "A" * limit}, None, 413),
        ("POST", "/api/projects", {"slug": "Bad Slug", "name": "X"}, None, 422),
        ("POST", "/api/projects", [1, 2], None, 422),
        ("GET", f"/api/projects/{slug}/assets?cursor=not-a-cursor", None, None, 422),
        ("GET", f"/api/projects/{slug}/assets?limit=0", None, None, 422),
        ("GET", "/api/projects/UPPER", None, None, 422),
        ("GET", f"/api/projects/{slug}/assets/not-a-uuid", None, None, 422),
        ("PUT", f"/api/projects/{slug}/storage", {"s3_bucket": "Not_A_Bucket"}, None, 422),
        ("PUT", f"/api/projects/{slug}/storage", {"s3_enabled": True, "s3_bucket": None}, None, 422),
        ("DELETE", f"/api/projects/{slug}", None, None, 428),
        ("DELETE", f"/api/projects/{slug}?confirm=false", None, None, 428),
    ]


def test_every_status_a_bad_request_gets_is_declared_for_its_operation(web, proto, doc, project, tmp_path):
    slug = project["slug"]
    before = audit_trail(web, slug)
    for method, path, body, headers, status in _bad_requests(slug, tmp_path, proto.MAX_MESSAGE_BYTES):
        resp = web.http(method, path, body, headers=headers)
        assert resp.status == status, (method, path, resp.status, resp.body[:300])
        proto.http_error(resp, status)
        declared = operation(doc, method, path)["responses"]
        assert str(status) in declared, f"{method} {path} answered {status}, declared {sorted(declared)}"
        assert declared[str(status)]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"}
        if status == 401:
            assert resp.headers.get("www-authenticate") == "Bearer"
            assert "WWW-Authenticate" in declared["401"]["headers"]
    assert web.http("GET", f"/api/projects/{slug}").json == project
    assert audit_trail(web, slug) == before


def test_every_operation_declares_the_statuses_every_request_can_get(doc):
    for template, ops in doc["paths"].items():
        for method, op in ops.items():
            statuses = set(op["responses"])
            assert {"200", "401", "403", "500", "503"} <= statuses, (method, template)
            assert "default" not in statuses, (method, template)
            if template != "/rpc":
                assert "422" in statuses, (method, template)
            if "requestBody" in op:
                assert {"400", "413"} <= statuses or template == "/rpc", (method, template)
                assert "413" in statuses
            if "{" in template:
                assert "404" in statuses, (method, template)
    assert "428" in doc["paths"]["/api/projects/{slug}"]["delete"]["responses"]
    assert "409" in doc["paths"]["/api/projects"]["post"]["responses"]


# --- /rpc answers anything with 200, as documented ---


@pytest.mark.parametrize("body", [None, b"", b"{not json", b'"a string"', b"[]"])
def test_rpc_answers_a_bad_body_with_a_json_rpc_error(web, proto, doc, body):
    resp = web.http("POST", "/rpc", body)
    assert resp.status == 200, resp.body
    proto.error_response(resp.json, request_id=None)
    op = doc["paths"]["/rpc"]["post"]
    assert op["requestBody"]["required"] is False and "200" in op["responses"]


# --- constraints the server enforces are in the schema ---


@pytest.mark.parametrize("root", ["relative/dir", "./here", "../up", "~/mine", ""])
def test_a_relative_project_root_is_refused(web, proto, server, project, root):
    slug = proto.unique_slug("rel")
    error = proto.http_error(web.http("POST", "/api/projects", {"slug": slug, "name": "R",
                                                                 "local_project_root": root}), 422,
                             name="invalid_params")
    assert error["data"]["details"]["errors"][0]["loc"][0] == "local_project_root"
    assert web.http("GET", f"/api/projects/{slug}").status == 404
    proto.http_error(web.http("PUT", f"/api/projects/{project['slug']}/storage", {"local_project_root": root}),
                     422, name="invalid_params")
    if root:
        assert not (Path.cwd() / root).exists() and not (server.home / root).exists()


def test_an_absolute_root_outside_the_home_is_allowed(web, proto, tmp_path, doc):
    slug = proto.unique_slug("abs")
    target = tmp_path / "own place"
    resp = web.http("POST", "/api/projects", {"slug": slug, "name": "A", "local_project_root": str(target)})
    assert resp.status == 200, resp.body
    assert resp.json["root_dir"] == str(target) and (target / "project.db").is_file()
    schema = resolve(doc, doc["paths"]["/api/projects"]["post"]["requestBody"]["content"]["application/json"][
        "schema"])["properties"]["local_project_root"]["anyOf"][0]
    assert re.fullmatch(schema["pattern"], str(target)) and not re.fullmatch(schema["pattern"], "relative/dir")


def test_a_root_the_os_cannot_make_is_a_conflict_not_a_fault(web, proto, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    slug = proto.unique_slug("blocked")
    for root in (blocker / "below", tmp_path / ("n" * 255) / ("m" * 255 + "x" * 10)):
        resp = web.http("POST", "/api/projects", {"slug": slug, "name": "B", "local_project_root": str(root)})
        assert resp.status in (409, 422), resp.body
    assert web.http("GET", f"/api/projects/{slug}").status == 404
    assert blocker.read_text() == "in the way"


def test_cursors_follow_the_documented_pattern(web, proto, doc, project):
    slug = project["slug"]
    for i in range(3):
        assert web.http("PATCH", f"/api/projects/{slug}", {"description": f"d{i}"}).status == 200
    page = web.http("GET", f"/api/audit?slug={slug}&limit=2").json
    params = {p["name"]: p for p in operation(doc, "GET", "/api/audit")["parameters"]}
    pattern = params["cursor"]["schema"]["pattern"]
    assert pattern == CURSOR_PATTERN and re.fullmatch(pattern, page["next_cursor"])
    rest = web.http("GET", f"/api/audit?slug={slug}&limit=500&cursor={page['next_cursor']}").json
    assert [e["event_code"] for e in page["items"] + rest["items"]] == [
        "project.updated", "project.updated", "project.updated", "project.created"]
    # Any string of the pattern is a position: one from beyond the year 9999 is before every row.
    far = "9" * 20 + ".ffffffff-ffff-ffff-ffff-ffffffffffff"
    assert len(web.http("GET", f"/api/audit?slug={slug}&limit=500&cursor={far}").json["items"]) == 4
    assert web.http("GET", f"/api/projects/{slug}/assets?cursor=0.00000000-0000-0000-0000-000000000000").json[
        "items"] == []


def test_s3_names_and_confirmation_are_in_the_schema(doc):
    body = doc["components"]["schemas"]["SetParamsBody"]
    bucket = body["properties"]["s3_bucket"]["anyOf"][0]
    assert (bucket["pattern"], bucket["minLength"], bucket["maxLength"]) == (BUCKET_PATTERN, 3, 63)
    for field in ("s3_prefix", "s3_region", "s3_endpoint_url", "local_project_root"):
        assert "pattern" in body["properties"][field]["anyOf"][0], field
    assert body["if"]["properties"]["s3_enabled"] == {"const": True}
    confirm = {p["name"]: p for p in doc["paths"]["/api/projects/{slug}"]["delete"]["parameters"]}["confirm"]
    assert confirm["required"] is True and confirm["schema"]["const"] is True


def test_s3_settings_round_trip_within_the_schema(web, proto, project):
    slug = project["slug"]
    good = {"s3_enabled": True, "s3_bucket": "iat.assets-1", "s3_prefix": "projects/a/", "s3_region": "eu-west-1",
            "s3_endpoint_url": "http://[::1]:9000/minio"}
    resp = web.http("PUT", f"/api/projects/{slug}/storage", good)
    assert resp.status == 200, resp.body
    assert {k: resp.json[k] for k in good} == good
    for bad in ({"s3_bucket": "a..b"}, {"s3_bucket": "xn--abc"}, {"s3_prefix": "/abs"}, {"s3_prefix": "a//b"},
                {"s3_prefix": "a/../b"}, {"s3_endpoint_url": "http://user:pw@host"}, {"s3_region": "EU"}):
        proto.http_error(web.http("PUT", f"/api/projects/{slug}/storage", bad), 422, name="invalid_params")
    # Clearing the bucket while S3 stays on conflicts with what is stored; turning S3 off first works.
    proto.http_error(web.http("PUT", f"/api/projects/{slug}/storage", {"s3_bucket": None}), 409, name="conflict")
    resp = web.http("PUT", f"/api/projects/{slug}/storage", {"s3_enabled": False, "s3_bucket": None})
    assert resp.status == 200 and resp.json["s3_bucket"] is None
    assert json.dumps(resp.json).count("pw") == 0


def test_candidates_take_exactly_one_of_run_id_and_job_id_as_documented(web, proto, doc, project):
    slug = project["slug"]
    (query,) = [p for p in operation(doc, "GET", f"/api/projects/{slug}/candidates")["parameters"]
                if p["in"] == "query"]
    assert query["style"] == "form" and query["explode"] and len(query["schema"]["oneOf"]) == 2
    some = "2e44dbca-d038-44c6-8763-0bd0e6bdf3ce"
    for refused in ("", f"?run_id={some}&job_id={some}"):
        proto.http_error(web.http("GET", f"/api/projects/{slug}/candidates{refused}"), 422, name="invalid_params")
    for one in (f"?run_id={some}", f"?job_id={some}"):  # well formed: no such run or job here
        proto.http_error(web.http("GET", f"/api/projects/{slug}/candidates{one}"), 404, name="not_found")


def test_a_run_body_is_required_and_typed_strictly(web, proto, doc, project):
    slug = project["slug"]
    assert operation(doc, "POST", f"/api/projects/{slug}/runs")["requestBody"]["required"] is True
    shot = {"job_key": "a", "scene": "a street"}
    for bad in (None, {}, {"shots": [{**shot, "cutout": 0}]}, {"shots": [shot], "candidates": "2"},
                {"shots": [shot], "provider": "nope"}):
        proto.http_error(web.http("POST", f"/api/projects/{slug}/runs/plan", bad), 422, name="invalid_params")
    resp = web.http("POST", f"/api/projects/{slug}/runs/plan", {"shots": [{**shot, "cutout": True}],
                                                               "shots_csv": None, "candidates": 1})
    assert resp.status == 200, resp.body
