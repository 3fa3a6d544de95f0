"""assets.delete: an asset nothing depends on goes with its links and (unless shared) its file; one in use is
refused with what uses it, and nothing changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from iat.app import App
from iat.assets import store
from iat.db.models import Asset, AssetLink

from support import Client, all_assets

WAIT_S = 240


def png(path: Path, color=(200, 30, 30)) -> Path:
    Image.new("RGB", (32, 24), color).save(path, "PNG")
    return path


def imported(client: Client, path: Path, kind: str = "input", slug: str = "alpha") -> dict:
    return client.call("assets.import", slug=slug, paths=[str(path)], kind=kind)["items"][0]


def file_of(alpha: dict, asset: dict) -> Path:
    return store.abs_path(Path(alpha["root_dir"]), asset["storage_uri"])


def state(app: App, alpha: dict) -> tuple:
    """Every asset row, link row and stored file of the project, read from the database and the disk."""
    handle = app.projects.open("alpha")

    def read():
        return (sorted(r["id"] for r in Asset.select(Asset.id).dicts()),
                sorted((r["parent_asset_id"], r["child_asset_id"], r["link_type"])
                       for r in AssetLink.select().dicts()))

    assets, links = handle.store.read(read)
    files = sorted(str(p) for p in (Path(alpha["root_dir"]) / "assets").rglob("*") if p.is_file())
    return assets, links, files


def audit_codes(client: Client) -> list[str]:
    return [e["event_code"] for e in client.call("audit.list", slug="alpha", limit=500)["items"]]


def test_deletes_the_row_its_links_and_its_file_and_leaves_derived_children(app: App, client: Client, alpha: dict,
                                                                             src: Path):
    parent = imported(client, png(src / "parent.png"))
    child = imported(client, png(src / "child.png", (10, 200, 10)), kind="generated")
    mask = imported(client, png(src / "mask.png", (0, 0, 0)), kind="mask")
    grandparent = imported(client, png(src / "gp.png", (9, 9, 200)))
    client.call("assets.link", slug="alpha", parent_asset_id=parent["id"], child_asset_id=child["id"],
                link_type="derived_from")
    client.call("assets.link", slug="alpha", parent_asset_id=parent["id"], child_asset_id=mask["id"],
                link_type="mask_for")
    client.call("assets.link", slug="alpha", parent_asset_id=grandparent["id"], child_asset_id=parent["id"],
                link_type="derived_from")
    seen: list[tuple[str, dict]] = []
    app.events.subscribe(lambda name, payload: seen.append((name, payload)))

    out = client.call("assets.delete", slug="alpha", asset_id=parent["id"])

    assert out["asset"]["id"] == parent["id"] and out["file_removed"] is True
    assert len(out["links_removed"]) == 3  # as the parent of two, as the child of one
    assert not file_of(alpha, parent).exists()
    assert client.error("assets.get", slug="alpha", asset_id=parent["id"]).name == "not_found"
    # The children and the grandparent stay, with their files; only the links to the deleted asset went.
    for other in (child, mask, grandparent):
        assert client.call("assets.get", slug="alpha", asset_id=other["id"])["id"] == other["id"]
        assert file_of(alpha, other).is_file()
    assets, links, _ = state(app, alpha)
    assert parent["id"] not in assets and links == []
    assert client.call("assets.lineage", slug="alpha", asset_id=child["id"], direction="ancestors")["edges"] == []
    assert audit_codes(client)[0] == "asset.deleted"
    assert app.events.drain()
    deleted = [p for name, p in seen if name == "asset.deleted"]
    assert deleted == [{"project_id": alpha["id"], "slug": "alpha", "asset_id": parent["id"], "kind": "input",
                        "file_removed": True, "links_removed": 3}]
    # Gone is gone: a second delete is not_found.
    assert client.error("assets.delete", slug="alpha", asset_id=parent["id"]).name == "not_found"


def test_a_file_another_row_shares_stays_until_its_last_row_goes(app: App, client: Client, alpha: dict, src: Path):
    path = png(src / "shared.png")
    first = imported(client, path, kind="input")
    second = imported(client, path, kind="reference")  # same bytes, another kind: another row, one file
    assert first["id"] != second["id"] and first["storage_uri"] == second["storage_uri"]

    out = client.call("assets.delete", slug="alpha", asset_id=first["id"])
    assert out["file_removed"] is False
    assert file_of(alpha, second).read_bytes() == path.read_bytes()
    assert client.call("assets.read", slug="alpha", asset_id=second["id"])["size"] == path.stat().st_size

    out = client.call("assets.delete", slug="alpha", asset_id=second["id"])
    assert out["file_removed"] is True and not file_of(alpha, second).exists()
    assert all_assets(client) == {}


def test_an_asset_in_a_reference_set_is_refused_and_nothing_changes(app: App, client: Client, alpha: dict,
                                                                    src: Path):
    ref = imported(client, png(src / "ref.png"), kind="reference")
    child = imported(client, png(src / "child.png", (1, 2, 3)))
    client.call("assets.link", slug="alpha", parent_asset_id=ref["id"], child_asset_id=child["id"],
                link_type="reference_of")
    rset = client.call("reference_sets.create", slug="alpha", name="looks", kind="style")
    item = client.call("reference_sets.add_item", slug="alpha", reference_set_id=rset["id"], asset_id=ref["id"])
    before, codes = state(app, alpha), audit_codes(client)

    err = client.error("assets.delete", slug="alpha", asset_id=ref["id"])

    assert err.name == "conflict" and "reference set item" in err.message
    assert err.details["used_by"] == [{"table": "reference_items", "column": "asset_id", "what": "a reference set item",
                                       "count": 1, "ids": [item["id"]]}]
    assert state(app, alpha) == before and audit_codes(client) == codes
    # Out of the set, it goes.
    client.call("reference_sets.remove_item", slug="alpha", reference_set_id=rset["id"], asset_id=ref["id"])
    assert client.call("assets.delete", slug="alpha", asset_id=ref["id"])["file_removed"] is True


def test_a_runs_images_are_in_use_and_its_contact_sheet_is_not(app: App, client: Client, alpha: dict):
    shots = [{"job_key": "one", "scene": "a quiet harbour", "characters": [], "time_of_day": "day",
              "weather": "clear"}]
    run = client.call("runs.start", slug="alpha", shots=shots, candidates=1, stages=["style_lock", "light_time"])
    assert app.runner.wait_idle(WAIT_S), "the run did not finish"
    cand = client.call("candidates.list", slug="alpha", run_id=run["id"])["items"][0]
    job = client.call("jobs.list", slug="alpha", run_id=run["id"])["items"][0]
    assert job["final_asset_id"] == cand["final_asset_id"]
    before = state(app, alpha)

    final = client.error("assets.delete", slug="alpha", asset_id=cand["final_asset_id"])
    assert final.name == "conflict"
    assert {(u["table"], u["column"]) for u in final.details["used_by"]} >= {
        ("run_jobs", "final_asset_id"), ("run_candidates", "final_asset_id")}
    first_step = cand["meta_json"]["assets"][0]["asset_id"]
    assert first_step not in (cand["output_asset_id"], cand["final_asset_id"])
    step = client.error("assets.delete", slug="alpha", asset_id=first_step)
    assert step.name == "conflict"
    assert step.details["used_by"] == [{"table": "run_candidates", "column": "meta_json",
                                        "what": "a step of a run candidate's chain", "count": 1,
                                        "ids": [cand["id"]]}]
    assert state(app, alpha) == before

    outputs = client.call("runs.outputs", slug="alpha", run_id=run["id"])
    sheet = outputs["contact_sheet_asset_id"]
    assert client.call("assets.delete", slug="alpha", asset_id=sheet)["asset"]["id"] == sheet
    assert client.call("runs.outputs", slug="alpha", run_id=run["id"])["contact_sheet_asset_id"] is None


def test_another_projects_asset_is_not_found_and_stays(app: App, client: Client, alpha: dict, src: Path):
    client.call("projects.create", slug="beta", name="Beta")
    client.call("projects.update", slug="beta", settings_json={"import_roots": [str(src)]})
    theirs = imported(client, png(src / "theirs.png"), slug="beta")
    mine = imported(client, png(src / "mine.png", (5, 5, 5)))

    err = client.error("assets.delete", slug="alpha", asset_id=theirs["id"])
    assert err.name == "not_found"
    assert client.call("assets.get", slug="beta", asset_id=theirs["id"])["id"] == theirs["id"]
    beta_root = Path(client.call("projects.get", slug="beta")["root_dir"])
    assert store.abs_path(beta_root, theirs["storage_uri"]).is_file()
    assert client.call("assets.get", slug="alpha", asset_id=mine["id"])["id"] == mine["id"]


@pytest.mark.parametrize("asset_id", ["not-a-uuid", ""])
def test_a_malformed_id_is_invalid_params(client: Client, alpha: dict, asset_id: str):
    assert client.error("assets.delete", slug="alpha", asset_id=asset_id).name == "invalid_params"


def test_the_rest_route_sits_beside_assets_get(app: App):
    routes = {(c.route.method, c.route.path): c.name for c in app.registry if c.route}
    assert routes[("DELETE", "/api/projects/{slug}/assets/{asset_id}")] == "assets.delete"
    assert routes[("GET", "/api/projects/{slug}/assets/{asset_id}")] == "assets.get"
