"""The offline copilot parser: a corpus of plain-language requests and what each must become.

Contexts are built directly (no database): the parser only reads the vocabulary a Context carries. Every proposal
the parser makes is also run through validate_payload, the check every instruction meets when it is created.
"""

from __future__ import annotations

import pytest

from iat.copilot.context import Context
from iat.copilot.envelope import validate_payload
from iat.copilot.parser import parse

R_LAST = "11111111-1111-4111-8111-111111111111"  # the latest real run: s1, s2, s3
R_OLD = "22222222-2222-4222-8222-222222222222"  # an older run: panel-04
R_DRY = "33333333-3333-4333-8333-333333333333"  # a dry run, newer than both
A_EXPORT = "aaaaaaaa-0000-4000-8000-000000000001"
A_LOG = "aaaaaaaa-0000-4000-8000-000000000002"
A_FINAL = "aaaaaaaa-0000-4000-8000-000000000003"
A_GEN = "aaaaaaaa-0000-4000-8000-000000000004"
A_UP = "aaaaaaaa-0000-4000-8000-000000000005"
A_FOREIGN = "bbbbbbbb-0000-4000-8000-000000000009"  # in no context: passed through all the same
I_DONE = "cccccccc-0000-4000-8000-000000000001"
I_RUN = "cccccccc-0000-4000-8000-000000000002"  # the latest open instruction (a pipeline run)
I_SYNC = "cccccccc-0000-4000-8000-000000000003"  # an older queued sync
I_OTHER = "dddddddd-0000-4000-8000-000000000004"


def _shot(key: str, tod: str = "day", weather: str = "clear", characters=()) -> dict:
    return {"job_key": key, "scene": f"scene {key}", "characters": list(characters), "time_of_day": tod,
            "weather": weather, "cutout": False}


CTX = Context(
    slug="alpha", project_id="p-alpha", project_name="Alpha Comic",
    other_projects={"beta": "Beta Story", "gamma-noir": "Gamma Noir"},
    shots={"s1": _shot("s1", characters=["hero"]), "s2": _shot("s2"), "s3": _shot("s3", characters=["hero"]),
           "panel-04": _shot("panel-04")},
    shot_runs={"s1": R_LAST, "s2": R_LAST, "s3": R_LAST, "panel-04": R_OLD},
    characters={"hero": "Mira"},
    runs=({"id": R_DRY, "status": "done", "run_mode": "dry", "created_at": "2024-05-03"},
          {"id": R_LAST, "status": "done", "run_mode": "run", "created_at": "2024-05-02"},
          {"id": R_OLD, "status": "done", "run_mode": "run", "created_at": "2024-05-01"}),
    assets=({"id": A_EXPORT, "kind": "export", "created_at": "5"}, {"id": A_LOG, "kind": "run_log", "created_at": "4"},
            {"id": A_FINAL, "kind": "final", "created_at": "3"}, {"id": A_GEN, "kind": "generated", "created_at": "2"},
            {"id": A_UP, "kind": "upscaled", "created_at": "1"}),
    instructions=({"id": I_DONE, "instruction_type": "qa_check", "status": "done", "objective": "QA"},
                  {"id": I_RUN, "instruction_type": "pipeline_run", "status": "running", "objective": "Render"},
                  {"id": I_SYNC, "instruction_type": "storage_sync", "status": "queued", "objective": "Sync"}))
EMPTY = Context(slug="alpha", project_id="p-alpha", project_name="Alpha Comic", other_projects={"beta": "Beta Story"})
# Keys where a number alone is ambiguous unless the noun says which.
AMBIG = Context(slug="alpha", project_id="p-alpha", project_name="Alpha Comic",
                shots={k: _shot(k) for k in ("s1", "p1", "shot-01", "p2")},
                shot_runs={k: R_LAST for k in ("s1", "p1", "shot-01", "p2")},
                runs=({"id": R_LAST, "status": "done", "run_mode": "run", "created_at": "1"},))

# Keys in other styles: zero-padded numbers, words, several numbers in one key, upper case.
MOON_KEYS = ("shot_010", "shot_020", "shot_030", "intro", "sc02_sh05", "Ending-Final")
MOON = Context(slug="moon-book", project_id="p-moon", project_name="Moon Book", other_projects={"sun-book": "Sun Book"},
               shots={k: _shot(k) for k in MOON_KEYS}, shot_runs={k: R_LAST for k in MOON_KEYS},
               runs=({"id": R_LAST, "status": "done", "run_mode": "run", "created_at": "1"},))


def P(kind: str, inputs: dict, execution: dict | None = None, **more) -> dict:
    return {"kind": "propose", "proposals": [(kind, inputs, execution or {})], **more}


def run(keys, tod=None, weather=None, **execution) -> dict:
    inputs = {"shot_keys": list(keys), **({"time_of_day": tod} if tod else {}),
              **({"weather": weather} if weather else {})}
    return P("pipeline_run", inputs, execution)


def edit(asset, op, factor=None) -> dict:
    return P("asset_edit", {"asset_id": asset, "operation": op, **({"factor": factor} if factor else {})})


def sync(direction="push", delete_remote=False, dry_run=None) -> dict:
    return P("storage_sync", {"direction": direction, "delete_remote": delete_remote},
             {"dry_run": True} if dry_run else {})


def export(fmt="tar.gz") -> dict:
    return P("custom", {"action": "export_project", "format": fmt})


def select(run_id, key, index) -> dict:
    return P("custom", {"action": "select_candidate", "run_id": run_id, "job_key": key, "candidate_index": index})


def costs(group_by="provider") -> dict:
    return {"kind": "answer", "query": {"kind": "costs", "group_by": group_by}}


CLARIFY = {"kind": "clarify"}
HELP = {"kind": "help"}
REFUSE = {"kind": "refuse"}
STATUS = {"kind": "answer", "query": {"kind": "instructions"}}
ALL_LAST = ["s1", "s2", "s3"]
ALL = ["s1", "s2", "s3", "panel-04"]

PIPELINE = [
    ("render shots s1 and s3 at dusk in the rain", run(["s1", "s3"], "dusk", "rain")),
    ("redo shot 2 at night", run(["s2"], "night")),
    ("run panel-04 again, foggy morning, 3 candidates", run(["panel-04"], "dawn", "fog", candidates=3)),
    ("run all shots of the last run in snow", run(ALL_LAST, weather="snow")),
    ("Please re-render S1 at sunset.", run(["s1"], "dusk")),
    ("Could you regenerate shot 3 with snowy weather using openai?", run(["s3"], weather="snow", provider="openai")),
    ("s2 at midnight, rainy, seed 42", run(["s2"], "night", "rain", seed=42)),
    ("I'd like panel 4 redone in the fog at dawn", run(["panel-04"], "dawn", "fog")),
    ("make shots 1 and 2 again but at noon with clear skies", run(["s1", "s2"], "day", "clear")),
    ("generate s1, s2 and s3 in the evening with 4 variations", run(["s1", "s2", "s3"], "dusk", candidates=4)),
    ("draw shot s3 at night in a blizzard", run(["s3"], "night", "snow")),
    ("rerun s1 on comfyui with two candidates", run(["s1"], provider="comfyui", candidates=2)),
    ("run shot 1 again in daylight and upscale it 2x", run(["s1"], "day", upscale_factor=2)),
    ("Render every shot at twilight", run(ALL, "dusk")),
    ("redo the whole last run at night", run(ALL_LAST, "night")),
    ("can you do s3 over, misty afternoon", run(["s3"], "day", "fog")),
    ("give me s2 in heavy rain", run(["s2"], weather="rain")),
    ("render s1", run(["s1"])),
    ("rerender panel-04 with seed 7 and 5 candidates", run(["panel-04"], seed=7, candidates=5)),
    ("shoot s1 at sunrise in the snow", run(["s1"], "dawn", "snow")),
    ("try s2 again but sunny", run(["s2"], weather="clear")),
    ("regenerate shots s1 to s3 at dusk", run(["s1", "s2", "s3"], "dusk")),
    ("redo s1 with the preview provider", run(["s1"], provider="preview")),
    ("Let's run the pipeline again for s2 and panel-04 at night", run(["s2", "panel-04"], "night")),
    ("re-render shot two at dusk", run(["s2"], "dusk")),
    ("hey, could you please render panel 4 by night in thick fog? thanks", run(["panel-04"], "night", "fog")),
    ("S1 and S2 again, evening light, stormy", run(["s1", "s2"], "dusk", "rain")),
    ("I want shots 1-3 redone at dawn", run(["s1", "s2", "s3"], "dawn")),
    ("regenerate s3 without rain", run(["s3"], weather="clear")),
    ("re-run every shot from the latest run with snowfall at midday", run(ALL_LAST, "day", "snow")),
    ("produce shot 1 in the middle of the night with 3 takes", run(["s1"], "night", candidates=3)),
    ("render s2 after dark using automatic1111 with seed 1234",
     run(["s2"], "night", provider="a1111", seed=1234)),
    ("redo s1 at dusk, keep it under $2", {**run(["s1"], "dusk"), "constraints": {"max_cost_usd": 2.0}}),
    ("render shot 3 at dawn and color correct the results", run(["s3"], "dawn", color_correct=True)),
]

PARAPHRASES = [
    ("Render s1 and s2 at night", run(["s1", "s2"], "night")),
    ("please redo panel 04 during a snowstorm", run(["panel-04"], weather="snow")),
    ("I want to see shot 3 again but at sunrise", run(["s3"], "dawn")),
    ("run s1 s2 s3 with foggy weather", run(["s1", "s2", "s3"], weather="fog")),
    ("can we get s2 in the morning with rain, 2 candidates, seed 99?", run(["s2"], "dawn", "rain", candidates=2,
                                                                            seed=99)),
    ("repeat the last run but make it snowy", run(ALL_LAST, weather="snow")),
    ("re-render all panels in clear weather at noon", run(ALL, "day", "clear")),
    ("do shot 2 again", run(["s2"])),
    ("render the first shot at dusk", run(["s1"], "dusk")),
    ("rerun shots 1, 2 and 3 with the comfyui provider", run(["s1", "s2", "s3"], provider="comfyui")),
    ("can you make it rain in shot 3?", run(["s3"], weather="rain")),
    ("Could you please re-render shot 1 and shot 3 in the snow at night?", run(["s1", "s3"], "night", "snow")),
    ("regenerate everything from the last run at dawn", run(ALL_LAST, "dawn")),
    ("rerender the entire last batch in rain", run(ALL_LAST, weather="rain")),
    ("generate 3 new versions of s2 at night", run(["s2"], "night", candidates=3)),
    ("render shots s1 and s2 with upscaling x3 at dusk", run(["s1", "s2"], "dusk", upscale_factor=3)),
    ("s1, s2, s3: night, snow", run(["s1", "s2", "s3"], "night", "snow")),
    ("render s2 without fog at night", run(["s2"], "night", "clear")),
    ("render the shots with Mira at night", run(["s1", "s3"], "night")),
    ("redo every hero shot in the fog", run(["s1", "s3"], weather="fog")),
    ("good morning render s1 at dusk", run(["s1"], "dusk")),
    ("Good evening! Could you redo s2 in the snow?", run(["s2"], weather="snow")),
    ("is the last run any good?", P("qa_check", {"run_id": R_LAST})),
    ("can you check the images from the latest run?", P("qa_check", {"run_id": R_LAST})),
    ("check the aspect ratio of the last run", P("qa_check", {"run_id": R_LAST}, {"size_check": "aspect"})),
    ("inspect the latest final", P("qa_check", {"asset_ids": [A_FINAL]})),
    (f"check run {R_OLD}", P("qa_check", {"run_id": R_OLD})),
    ("sync the project with the bucket and remove files from the bucket that were deleted locally",
     sync(delete_remote=True)),
    ("do a dry run of the s3 sync", sync(dry_run=True)),
    ("what would a sync do", sync(dry_run=True)),
    ("restore the project from s3", sync("pull")),
    ("push to the cloud, dry run only", sync(dry_run=True)),
    ("sync but delete nothing", sync()),
    (f"please cut {A_GEN} out", edit(A_GEN, "remove_background")),
    (f"make {A_GEN} twice as big", edit(A_GEN, "upscale", 2)),
    ("make the last picture bigger, 3x", edit(A_FINAL, "upscale", 3)),
    ("can you make the last image transparent?", edit(A_FINAL, "remove_background")),
    ("remove bg from it", edit(A_FINAL, "remove_background")),
    ("enhance the colors of the last image", edit(A_FINAL, "color_correct")),
    ("download the project as a zip", export("zip")),
    ("save the project as a folder", export("folder")),
    ("give me an export of everything", export()),
    ("use the 2nd candidate for s1", select(R_LAST, "s1", 1)),
    ("overwrite the final of s1 with candidate 2", select(R_LAST, "s1", 2)),
    ("get rid of the project entirely", P("custom", {"action": "delete_project"})),
    ("delete the project and all its files", P("custom", {"action": "delete_project"})),
]

PIPELINE_CLARIFY = [
    ("render shot s9 at night", CLARIFY),
    ("redo shot 7", CLARIFY),
    ("render at dusk", CLARIFY),
    ("run the pipeline", CLARIFY),
    ("render s1 at dawn and s2 at night", CLARIFY),
    ("render s1 with 40 candidates", CLARIFY),
    ("render s1 and upscale it 8x", CLARIFY),
    ("redo the scene in the rain", CLARIFY),
    ("render s1 in purple weather", CLARIFY),
    ("redo shots s1 and s2 and cut them out", CLARIFY),
    ("render s1 then sync", CLARIFY),
    (f"redo s1 at night and delete {A_GEN}", CLARIFY),
]

QA = [
    ("check the quality of the last run", P("qa_check", {"run_id": R_LAST})),
    (f"QA run {R_OLD}", P("qa_check", {"run_id": R_OLD})),
    (f"check assets {A_FINAL}, {A_GEN}", P("qa_check", {"asset_ids": [A_FINAL, A_GEN]})),
    ("run a quality check on the latest run", P("qa_check", {"run_id": R_LAST})),
    ("Please QA the most recent run.", P("qa_check", {"run_id": R_LAST})),
    (f"verify the images of run {R_OLD}", P("qa_check", {"run_id": R_OLD})),
    (f"inspect asset {A_GEN} for quality problems", P("qa_check", {"asset_ids": [A_GEN]})),
    ("check it", P("qa_check", {"run_id": R_LAST})),
    ("review the quality of the previous render", P("qa_check", {"run_id": R_LAST})),
    ("run QA on the last run", P("qa_check", {"run_id": R_LAST})),
    ("double-check the last run for transparency",
     P("qa_check", {"run_id": R_LAST}, {"require_transparency": True})),
    (f"could you quality-check image {A_FOREIGN}?", P("qa_check", {"asset_ids": [A_FOREIGN]})),
    ("how good is the latest run? run the quality checks", P("qa_check", {"run_id": R_LAST})),
    ("validate the last image", P("qa_check", {"asset_ids": [A_FINAL]})),
]

QA_CLARIFY = [
    ("check it", CLARIFY, EMPTY),
    ("check the quality of the last run", CLARIFY, EMPTY),
]

SYNC = [
    ("sync to S3", sync()),
    ("push the project to the bucket", sync()),
    ("pull from s3", sync("pull")),
    ("sync and delete remote files that are gone locally", sync(delete_remote=True)),
    ("dry run a sync", sync(dry_run=True)),
    ("upload everything to the cloud", sync()),
    ("download the files from the bucket", sync("pull")),
    ("back up the project to s3", sync()),
    ("sync with remote storage, but just a dry run", sync(dry_run=True)),
    ("simulate a push to s3", sync(dry_run=True)),
    ("mirror the project to s3 and prune remote files that no longer exist locally", sync(delete_remote=True)),
    ("sync storage", sync()),
    ("pull the latest files down from remote storage", sync("pull")),
    ("could you sync the project please", sync()),
    ("push to s3 and remove orphaned remote objects", sync(delete_remote=True)),
    ("sync to s3 without deleting anything remotely", sync()),
    ("synchronise the remote copy", sync()),
    ("fetch everything from the bucket", sync("pull")),
]

ASSET_EDIT = [
    (f"remove the background of asset {A_GEN}", edit(A_GEN, "remove_background")),
    ("cut out the last image", edit(A_FINAL, "remove_background")),
    (f"upscale {A_GEN} 4x", edit(A_GEN, "upscale", 4)),
    ("upscale it by 2", edit(A_FINAL, "upscale", 2)),
    (f"make the background of {A_UP} transparent", edit(A_UP, "remove_background")),
    (f"color correct {A_GEN}", edit(A_GEN, "color_correct")),
    ("fix the colours of the latest image", edit(A_FINAL, "color_correct")),
    (f"enlarge {A_FINAL} three times", edit(A_FINAL, "upscale", 3)),
    (f"double the resolution of {A_GEN}", edit(A_GEN, "upscale", 2)),
    ("quadruple the size of the last picture", edit(A_FINAL, "upscale", 4)),
    (f"strip the bg from {A_FINAL}", edit(A_FINAL, "remove_background")),
    ("upscale the last generated image 2x", edit(A_GEN, "upscale", 2)),
    (f"colour-grade asset {A_UP}", edit(A_UP, "color_correct")),
    (f"please knock out the backdrop on {A_FOREIGN}", edit(A_FOREIGN, "remove_background")),
    ("could you upscale the newest image by a factor of 3?", edit(A_FINAL, "upscale", 3)),
    (f"I need a transparent png of {A_GEN}", edit(A_GEN, "remove_background")),
    ("scale up the latest upscaled image x2", edit(A_UP, "upscale", 2)),
]

ASSET_EDIT_MULTI = [
    (f"remove the backgrounds of {A_FINAL} and {A_GEN}",
     [("asset_edit", {"asset_id": A_FINAL, "operation": "remove_background"}),
      ("asset_edit", {"asset_id": A_GEN, "operation": "remove_background"})]),
    (f"remove the background of {A_GEN} and upscale it 2x",
     [("asset_edit", {"asset_id": A_GEN, "operation": "remove_background"}),
      ("asset_edit", {"asset_id": A_GEN, "operation": "upscale", "factor": 2})]),
    ("export the project as a zip and sync to s3",
     [("custom", {"action": "export_project", "format": "zip"}),
      ("storage_sync", {"direction": "push", "delete_remote": False})]),
]

ASSET_EDIT_CLARIFY = [
    (f"upscale {A_GEN}", CLARIFY),
    (f"upscale {A_GEN} 8x", CLARIFY),
    ("remove the background", CLARIFY),
    ("color correct something", CLARIFY),
]

EXPORT = [
    ("export the project", export()),
    ("make a zip of the project", export("zip")),
    ("package it as a folder", export("folder")),
    ("export as tar.gz", export()),
    ("create an archive of this project", export()),
    ("bundle everything into a zip file", export("zip")),
    ("I need a tarball of the project", export()),
    ("export alpha", export()),
    ("export the project to a directory", export("folder")),
    ("Could you export Alpha Comic for me?", export()),
    ("zip it up", export("zip")),
]

COSTS = [
    ("show costs", costs()),
    ("how much did we spend per run", costs("run")),
    ("what did today cost", costs("day")),
    ("cost breakdown by operation", costs("operation")),
    ("what's our spending so far?", costs()),
    ("how much have we spent on each provider", costs()),
    ("show me daily costs", costs("day")),
    ("how expensive was each run?", costs("run")),
    ("what's the bill?", costs()),
    ("costs per step", costs("operation")),
    ("how much money did we burn yesterday", costs("day")),
    ("what did the last run cost", costs("run")),
    ("spending this week", costs("day")),
    ("how much was spent on openai", costs()),
]

STATUSES = [
    ("what are you doing", STATUS),
    ("list instructions", STATUS),
    ("status", STATUS),
    ("what's in the queue?", STATUS),
    ("show me the pending instructions", STATUS),
    ("what are you working on right now?", STATUS),
    ("any progress?", STATUS),
    ("show the agent's tasks", STATUS),
    ("what is the agent doing", STATUS),
    ("is anything running?", STATUS),
]

CANCEL = [
    (f"cancel instruction {I_SYNC}", I_SYNC),
    ("cancel that", I_RUN),
    ("stop it", I_RUN),
    ("cancel the last instruction", I_RUN),
    ("abort!", I_RUN),
    (f"please cancel {I_OTHER}", I_OTHER),
    ("cancel the sync", I_SYNC),
    ("stop the render", I_RUN),
    ("never mind, stop", I_RUN),
    ("stop syncing", I_SYNC),
    ("stop the project sync", I_SYNC),
]

DESTRUCTIVE = [
    ("delete the project", P("custom", {"action": "delete_project"})),
    (f"delete asset {A_GEN}", P("custom", {"action": "delete_asset", "asset_id": A_GEN})),
    (f"use candidate 2 for shot s1 in run {R_OLD}", select(R_OLD, "s1", 2)),
    ("pick candidate 3 as final for s2", select(R_LAST, "s2", 3)),
    ("please delete this project permanently", P("custom", {"action": "delete_project"})),
    (f"trash image {A_FINAL}", P("custom", {"action": "delete_asset", "asset_id": A_FINAL})),
    (f"get rid of asset {A_UP}", P("custom", {"action": "delete_asset", "asset_id": A_UP})),
    (f"remove {A_GEN} from the project", P("custom", {"action": "delete_asset", "asset_id": A_GEN})),
    ("make candidate 0 the final for panel-04", select(R_OLD, "panel-04", 0)),
    ("select the second candidate for s3", select(R_LAST, "s3", 1)),
    ("go with candidate 1 on shot 2", select(R_LAST, "s2", 1)),
    ("delete project alpha", P("custom", {"action": "delete_project"})),
    ("erase the whole project", P("custom", {"action": "delete_project"})),
    ("sync and delete remote files that are gone locally", sync(delete_remote=True)),
    ("I prefer candidate #4 for s1, set it as the final", select(R_LAST, "s1", 4)),
]

DESTRUCTIVE_MULTI = [
    (f"delete assets {A_FINAL} and {A_GEN}",
     [("custom", {"action": "delete_asset", "asset_id": A_FINAL}),
      ("custom", {"action": "delete_asset", "asset_id": A_GEN})]),
]

DESTRUCTIVE_IMPLICIT = [
    "delete it", "delete everything", "remove all the old stuff", "wipe the bucket", "delete the last image",
    "get rid of the old renders", "delete", "destroy all assets", "pick candidate 2", "use candidate 2 for s9",
    "pick candidate 42 for s2",
    "delete the run", "delete the remote files", "clear out the project folder", "remove them",
    "nuke it all", "throw away the drafts", "remove the project from s3", "delete all assets in the project",
    "clear out the project folder", "delete the project folder", "how do I delete the project?",
    f"what if we delete asset {A_GEN}", "sync to s3 and then delete the project", "delete shot s1",
    "remove the last run", "delete asset 42",
]

NEGATED = [
    ("don't delete the project", None),
    (f"do not delete asset {A_FINAL}", None),
    ("never delete anything", None),
    ("don't delete the project, just export it", export()),
    ("sync to s3 but don't delete remote files", sync()),
    ("please do not wipe the bucket", None),
    ("don't render anything", None),
    ("kill the project", None),
    ("I don't want to delete anything, just sync", sync()),
    ("don't sync, export instead", export()),
]

REFUSED = [
    "render shots in project beta", "delete beta's shots", "export Beta Story", "sync gamma-noir to s3",
    "check the last run of gamma noir", "delete the project beta", f"upscale BETA asset {A_FINAL} 2x",
    "cancel the instructions in beta", "how much did beta cost?", "render s1 at night for project zeta",
]

NOT_REFUSED = [("render s1 in betamax style at night", run(["s1"], "night")),
               ("sync the alpha project", sync())]

GREETINGS = ["hi", "hello there!", "what can you do?", "help", "thanks!", "tell me a joke", "", "   ",
             "good morning"]


def _check(reply, expected: dict) -> None:
    assert reply.kind == expected["kind"], (reply.kind, reply.text)
    assert reply.text.strip()
    if "query" in expected:
        assert reply.query == expected["query"]
    if "proposals" in expected:
        got = [(p.instruction_type, validate_payload(p.instruction_type, p.objective, p.inputs, p.execution,
                                                     p.constraints)) for p in reply.proposals]
        want = [(t, validate_payload(t, "x", i, e)) for t, i, e in expected["proposals"]]
        assert [(t, g["inputs"], g["execution"]) for t, g in got] == [(t, w["inputs"], w["execution"])
                                                                      for t, w in want]
        assert [g["constraints"] for _, g in got] == [expected.get("constraints", {})] * len(got)


@pytest.mark.parametrize("text,expected",
                         PIPELINE + QA + SYNC + ASSET_EDIT + EXPORT + DESTRUCTIVE + NOT_REFUSED + PARAPHRASES)
def test_proposes(text, expected):
    _check(parse(text, CTX), expected)


@pytest.mark.parametrize("text,expected", ASSET_EDIT_MULTI + DESTRUCTIVE_MULTI)
def test_several_proposals(text, expected):
    reply = parse(text, CTX)
    _check(reply, {"kind": "propose", "proposals": [(t, i, {}) for t, i in expected]})


@pytest.mark.parametrize("text,expected", PIPELINE_CLARIFY + ASSET_EDIT_CLARIFY)
def test_asks_back(text, expected):
    reply = parse(text, CTX)
    _check(reply, expected)
    assert not reply.proposals


KEY_STYLES = [
    ("render shot 10 at night", run(["shot_010"], "night"), MOON),
    ("render shots 10 to 30 in fog", run(["shot_010", "shot_020", "shot_030"], weather="fog"), MOON),
    ("render shot_010 to shot_030 at night", run(["shot_010", "shot_020", "shot_030"], "night"), MOON),
    ("redo the intro at dusk", run(["intro"], "dusk"), MOON),
    ("render intro and ending-final at dawn", run(["intro", "Ending-Final"], "dawn"), MOON),
    ("redo shot 5", run(["sc02_sh05"]), MOON),
    ("delete the moon-book project", P("custom", {"action": "delete_project"}), MOON),
    ("render shot 1", CLARIFY, MOON),
    ("render shots 40-50 in fog", CLARIFY, MOON),
    ("sync sun-book", REFUSE, MOON),
    ("render shot2 at night", run(["s2"], "night"), CTX),
    ("render S01 and P4 in fog", run(["s1", "panel-04"], weather="fog"), CTX),
    ("render rgb8 at night", CLARIFY, CTX),
]


@pytest.mark.parametrize("text,expected,ctx", KEY_STYLES)
def test_key_styles(text, expected, ctx):
    _check(parse(text, ctx), expected)


@pytest.mark.parametrize("text,expected,ctx", QA_CLARIFY)
def test_asks_back_without_a_run(text, expected, ctx):
    _check(parse(text, ctx), expected)


@pytest.mark.parametrize("text,expected", COSTS + STATUSES)
def test_answers(text, expected):
    reply = parse(text, CTX)
    _check(reply, expected)
    assert not reply.proposals


@pytest.mark.parametrize("text,target", CANCEL)
def test_cancels(text, target):
    reply = parse(text, CTX)
    assert (reply.kind, reply.instruction_id) == ("cancel", target), reply.text


@pytest.mark.parametrize("text", ["cancel that", "stop it", "cancel the sync"])
def test_cancel_with_nothing_open_asks(text):
    ctx = Context(**{**CTX.__dict__, "instructions": ({"id": I_DONE, "instruction_type": "qa_check",
                                                        "status": "done", "objective": "QA"},)})
    assert parse(text, ctx).kind == "clarify"


@pytest.mark.parametrize("text", DESTRUCTIVE_IMPLICIT)
def test_implicit_destructive_target_asks(text):
    reply = parse(text, CTX)
    assert reply.kind == "clarify", (reply.kind, reply.proposals)
    assert not reply.proposals


@pytest.mark.parametrize("text,expected", NEGATED)
def test_negation_never_destroys(text, expected):
    reply = parse(text, CTX)
    assert not any(_destructive(p) for p in reply.proposals)
    if expected is None:
        assert reply.kind != "propose"
    else:
        _check(reply, expected)


@pytest.mark.parametrize("text", REFUSED)
def test_other_projects_are_refused(text):
    reply = parse(text, CTX)
    assert reply.kind == "refuse", reply.text
    assert not reply.proposals


@pytest.mark.parametrize("text", GREETINGS)
def test_help(text):
    reply = parse(text, CTX)
    assert reply.kind == "help" and "render" in reply.text.lower()


def _destructive(p) -> bool:
    return ((p.instruction_type == "custom" and p.inputs["action"] != "export_project")
            or (p.instruction_type == "storage_sync" and p.inputs.get("delete_remote")))


def _wants_destruction(want: dict) -> bool:
    return any((kind == "custom" and inputs["action"] != "export_project") or inputs.get("delete_remote")
               for kind, inputs, _ in want.get("proposals", []))


NON_DESTRUCTIVE = [t for t, want in PIPELINE + PIPELINE_CLARIFY + QA + SYNC + ASSET_EDIT + ASSET_EDIT_CLARIFY
                   + EXPORT + COSTS + STATUSES + NOT_REFUSED + PARAPHRASES if not _wants_destruction(want)]


@pytest.mark.parametrize("text", NON_DESTRUCTIVE)
def test_no_destructive_proposal_for_other_requests(text):
    assert not any(_destructive(p) for p in parse(text, CTX).proposals)


@pytest.mark.parametrize("text", [t for t, _ in DESTRUCTIVE])
def test_destructive_requests_propose_destructive_work(text):
    reply = parse(text, CTX)
    assert reply.kind == "propose" and all(_destructive(p) for p in reply.proposals)


def test_unknown_shot_lists_known_keys():
    reply = parse("render shot s9 at night", CTX)
    assert set(reply.options) == set(ALL) and "s9" in reply.text


def test_ambiguous_number_asks_which_key():
    reply = parse("redo shot 1 at night", AMBIG)
    assert reply.kind == "clarify" and set(reply.options) == {"s1", "shot-01"}
    _check(parse("redo panel 1 at night", AMBIG), run(["p1"], "night"))
    _check(parse("redo P2 at night", AMBIG), run(["p2"], "night"))


def test_known_keys_are_offered_up_to_ten():
    ctx = Context(**{**CTX.__dict__, "shots": {f"k{i}": _shot(f"k{i}") for i in range(30)}})
    assert len(parse("render at night", ctx).options) == 10


def test_no_shots_known_asks():
    reply = parse("render shot 1 at dusk", EMPTY)
    assert reply.kind == "clarify" and not reply.proposals


def test_upscale_without_factor_offers_factors():
    assert parse(f"upscale {A_GEN}", CTX).options == ("2x", "3x", "4x")


def test_no_image_to_edit_asks():
    assert parse("cut out the last image", EMPTY).kind == "clarify"


def test_objectives_and_texts_say_what_was_understood():
    reply = parse("render shots s1 and s3 at dusk in the rain", CTX)
    assert reply.proposals[0].objective == "Render shots s1, s3 at dusk in the rain"
    assert "s1" in reply.text and "dusk" in reply.text


def test_priority_words():
    assert parse("urgent: render s1 at night", CTX).proposals[0].priority < 100
    assert parse("render s1 at night, no rush", CTX).proposals[0].priority > 100


def test_render_then_check_the_new_run_asks():
    # The check would have to wait for a run that does not exist yet.
    assert parse("render s1 at night and then check its quality", CTX).kind == "clarify"


def test_two_answers_or_mixed_kinds_ask():
    assert parse("cancel that and render s1 at night", CTX).kind == "clarify"


def test_clear_the_queue_asks_which():
    reply = parse("clear the queue", CTX)
    assert reply.kind == "clarify" and set(reply.options) == {f"cancel instruction {I_RUN}",
                                                              f"cancel instruction {I_SYNC}"}


def test_many_ids_pass_through():
    ids = [f"eeeeeeee-0000-4000-8000-{i:012d}" for i in range(40)]
    reply = parse("check assets " + ", ".join(ids), CTX)
    assert reply.proposals[0].inputs["asset_ids"] == ids


def test_deterministic():
    texts = [t for t, _ in PIPELINE + QA + SYNC + ASSET_EDIT + EXPORT + DESTRUCTIVE]
    assert [parse(t, CTX) for t in texts] == [parse(t, CTX) for t in texts]


def test_corpus_size():
    total = sum(map(len, (PIPELINE, PIPELINE_CLARIFY, QA, QA_CLARIFY, SYNC, ASSET_EDIT, ASSET_EDIT_MULTI,
                          ASSET_EDIT_CLARIFY, EXPORT, COSTS, STATUSES, CANCEL, DESTRUCTIVE, DESTRUCTIVE_MULTI,
                          DESTRUCTIVE_IMPLICIT, NEGATED, REFUSED, NOT_REFUSED, GREETINGS, PARAPHRASES,
                          KEY_STYLES)))
    assert total >= 120


def test_shuffled_words_never_crash_and_only_valid_or_named_destruction():
    """Requests made of the corpus's words in random order (seeded): every reply is well formed, every proposal
    validates, and nothing destructive comes out of words that ask for no destruction."""
    import random
    import re

    words = " ".join(t for t, _ in PIPELINE + QA + SYNC + ASSET_EDIT + EXPORT + DESTRUCTIVE + COSTS
                     + PARAPHRASES).split() + DESTRUCTIVE_IMPLICIT + REFUSED
    words += ["42", "17", "0", "99", "x9", "9x", "by 7", "seed", "99999999999", "1.5", "$", "#20", "1-40", "no"]
    rng = random.Random(11)
    for _ in range(1500):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 14)))
        for ctx in (CTX, EMPTY, AMBIG):
            reply = parse(text, ctx)
            assert reply.kind in ("propose", "clarify", "answer", "cancel", "refuse", "help") and reply.text
            assert (reply.kind == "propose") == bool(reply.proposals)
            for p in reply.proposals:
                validate_payload(p.instruction_type, p.objective, p.inputs, p.execution, p.constraints)
                if _destructive(p):
                    assert re.search(r"delet|remov|eras|trash|destroy|wip|purg|rid|discard|nuk|clear|clean|throw|"
                                     r"drop|scrap|prune|candidate|option|variant|version|final", text, re.I), text


# --- command phrases of other languages (iat.copilot.glossary: what a Korean speech model returns) ---


@pytest.mark.parametrize("spoken,english", [
    ("저장소 동기화", "sync the storage"), ("품질 검사", "check the quality of the last run"),
    ("비용 보여줘", "show the costs"), ("마지막 지시 취소", "cancel the last instruction"),
    ("지시 목록", "list the instructions"), ("도움말", "help"),
])
def test_a_glossary_phrase_is_understood_as_its_english_request(spoken, english):
    from iat.copilot import glossary

    assert glossary.to_english(spoken) == english
    assert parse(spoken, CTX) == parse(english, CTX)


def test_glossary_phrases_replace_whole_words_only():
    from iat.copilot import glossary

    assert glossary.to_english("저장소 동기화해") == "저장소 동기화해"
    assert glossary.to_english("please 비용 보여줘 now") == "please show the costs now"
