"""clicks.json and mask prompts: parsing, every rejection, and the checks against the video."""
from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samtrack.errors import InputError
from samtrack.prompts import (
    OBJECT_KEYS,
    PROMPT_KEYS,
    TOP_KEYS,
    FramePrompt,
    ObjectPrompts,
    check_prompts,
    load_clicks,
    load_mask_prompt,
    validate_prompts,
)

GOOD = {
    "version": 1,
    "objects": [
        {"id": 1, "name": "bear",
         "prompts": [
             {"frame": 0, "positive": [[412, 230], [450.5, 260]], "negative": [[100, 50]]},
             {"frame": 40, "positive": [[300, 240]], "box": [250, 150, 420, 330]},
         ]},
        {"id": 7, "prompts": [{"frame": 5, "box": [0, 0, 10.5, 20]}]},
    ],
}


def write_json(tmp_path: Path, data, name: str = "clicks.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def one_object(**prompt) -> dict:
    return {"objects": [{"id": 1, "prompts": [{"frame": 0, **prompt}]}]}


def raises_input_error(call, path: Path) -> str:
    """Run ``call``, expect an InputError naming ``path`` on one line; return its message."""
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert info.value.path == path
    return message


# ---------------------------------------------------------------------- good files
def test_good_file_loads_to_arrays(tmp_path):
    objects = load_clicks(write_json(tmp_path, GOOD))
    assert [o.obj_id for o in objects] == [1, 7]
    bear, other = objects
    assert bear.name == "bear" and other.name is None
    assert [p.frame for p in bear.prompts] == [0, 40]
    first = bear.prompts[0]
    assert first.points.dtype == np.float32 and first.labels.dtype == np.int32
    np.testing.assert_array_equal(first.points, [[412, 230], [450.5, 260], [100, 50]])
    np.testing.assert_array_equal(first.labels, [1, 1, 0])
    assert first.box is None and first.mask is None
    second = bear.prompts[1]
    assert second.box.dtype == np.float32
    np.testing.assert_array_equal(second.box, [250, 150, 420, 330])
    np.testing.assert_array_equal(second.labels, [1])
    # A box alone is a valid prompt; its point arrays are empty but well-shaped.
    box_only = other.prompts[0]
    assert box_only.points.shape == (0, 2) and box_only.points.dtype == np.float32
    assert box_only.labels.shape == (0,) and box_only.labels.dtype == np.int32
    assert bear.first_frame == 0 and other.first_frame == 5
    assert bear.at(40) is second and bear.at(1) is None


def test_version_is_optional(tmp_path):
    data = {"objects": GOOD["objects"]}
    assert len(load_clicks(write_json(tmp_path, data))) == 2


# ---------------------------------------------------------------------- bad files
BAD_CASES = {
    "syntax": ('{"objects": [\n  {"id": 1,,}\n]}', "not valid JSON: Expecting property name enclosed in double quotes at line 2, column 12"),
    "duplicate key": ('{"objects": [], "objects": []}', "key 'objects' appears twice"),
    "top not object": ([1, 2], "top level: must be a JSON object, got [1, 2]"),
    "unknown top key": ({**GOOD, "extra": 1}, "top level: unknown key 'extra'"),
    "missing objects": ({"version": 1}, "top level: missing key 'objects'"),
    "version 2": ({**GOOD, "version": 2}, "version: unsupported version 2"),
    "version string": ({**GOOD, "version": "1"}, 'version: unsupported version "1"'),
    "objects empty": ({"objects": []}, "objects: must be a non-empty array"),
    "objects not list": ({"objects": {"id": 1}}, "objects: must be a non-empty array"),
    "unknown object key": ({"objects": [{"id": 1, "colour": "red", "prompts": [{"frame": 0, "positive": [[1, 1]]}]}]},
                           "objects[0]: unknown key 'colour'"),
    "missing id": ({"objects": [{"prompts": [{"frame": 0, "positive": [[1, 1]]}]}]}, "objects[0]: missing key 'id'"),
    "id string": ({"objects": [{"id": "1", "prompts": [{"frame": 0, "positive": [[1, 1]]}]}]}, 'objects[0].id: must be an integer, got "1"'),
    "id bool": ({"objects": [{"id": True, "prompts": [{"frame": 0, "positive": [[1, 1]]}]}]}, "objects[0].id: must be an integer, got true"),
    "id 0": ({"objects": [{"id": 0, "prompts": [{"frame": 0, "positive": [[1, 1]]}]}]}, "objects[0].id: must be an integer in 1..254"),
    "id 255": ({"objects": [{"id": 255, "prompts": [{"frame": 0, "positive": [[1, 1]]}]}]}, "objects[0].id: must be an integer in 1..254"),
    "id 300": ({"objects": [{"id": 300, "prompts": [{"frame": 0, "positive": [[1, 1]]}]}]}, "got 300"),
    "duplicate ids": ({"objects": [GOOD["objects"][0], {**GOOD["objects"][1], "id": 1}]},
                      "objects[1].id: id 1 is already used by objects[0]"),
    "name int": ({"objects": [{"id": 1, "name": 3, "prompts": [{"frame": 0, "positive": [[1, 1]]}]}]},
                 "objects[0].name: must be a string or null, got 3"),
    "prompts not list": ({"objects": [{"id": 1, "prompts": {"frame": 0}}]}, "objects[0].prompts: must be an array"),
    "prompts empty": ({"objects": [{"id": 1, "prompts": []}]}, "objects[0].prompts: must not be empty"),
    "unknown prompt key": (one_object(positive=[[1, 1]], clicks=[[1, 1]]), "objects[0].prompts[0]: unknown key 'clicks'"),
    "missing frame": ({"objects": [{"id": 1, "prompts": [{"positive": [[1, 1]]}]}]}, "objects[0].prompts[0]: missing key 'frame'"),
    "frame float": ({"objects": [{"id": 1, "prompts": [{"frame": 1.5, "positive": [[1, 1]]}]}]},
                    "objects[0].prompts[0].frame: must be an integer, got 1.5"),
    "frame negative": ({"objects": [{"id": 1, "prompts": [{"frame": -1, "positive": [[1, 1]]}]}]},
                       "objects[0].prompts[0].frame: must be an integer >= 0, got -1"),
    "duplicate frames": ({"objects": [{"id": 1, "prompts": [{"frame": 3, "positive": [[1, 1]]}, {"frame": 3, "positive": [[2, 2]]}]}]},
                         "objects[0].prompts[1].frame: frame 3 already has a prompt"),
    "frames out of order": ({"objects": [{"id": 1, "prompts": [{"frame": 9, "positive": [[1, 1]]}, {"frame": 3, "positive": [[2, 2]]}]}]},
                            "objects[0].prompts[1].frame: frame 3 is listed after frame 9"),
    "positive not list": (one_object(positive=5), "objects[0].prompts[0].positive: must be an array of [x, y] points, got 5"),
    "point too long": (one_object(positive=[[1, 1], [1, 2, 3]]), "objects[0].prompts[0].positive[1]: must be an [x, y] pair of numbers, got [1, 2, 3]"),
    "coordinate string": (one_object(positive=[[1, 1]], negative=[["1", 2]]), 'objects[0].prompts[0].negative[0]: must be an [x, y] pair of numbers, got ["1", 2]'),
    "coordinate NaN": (one_object(positive=[[1, 1], [float("nan"), 2]]), "objects[0].prompts[0].positive[1]: coordinates must be finite"),
    "negative positive coordinate": (one_object(positive=[[1, 1], [2, 2], [-3, 5]]),
                                     "objects[0].prompts[0].positive[2]: negative coordinate in [-3, 5]"),
    "negative negative coordinate": (one_object(positive=[[1, 1]], negative=[[4, 4], [5, -0.5]]),
                                     "objects[0].prompts[0].negative[1]: negative coordinate in [5, -0.5]"),
    "box wrong length": (one_object(box=[1, 2, 3]), "objects[0].prompts[0].box: must be a [x0, y0, x1, y1] array of numbers, got [1, 2, 3]"),
    "box negative": (one_object(box=[-1, 2, 30, 40]), "objects[0].prompts[0].box: coordinates must be finite and >= 0"),
    "box x0 >= x1": (one_object(box=[30, 2, 30, 40]), "objects[0].prompts[0].box: must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got [30, 2, 30, 40]"),
    "box y0 >= y1": (one_object(box=[1, 50, 30, 40]), "objects[0].prompts[0].box: must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1"),
    "nothing positive in a prompt": ({"objects": [{"id": 1, "prompts": [{"frame": 0, "positive": [[1, 1]]}, {"frame": 2, "negative": [[1, 1]]}]}]},
                                     "objects[0].prompts[1]: needs a positive point or a box"),
    "object without positives": (one_object(negative=[[1, 1]], positive=[]), "objects[0].prompts[0]: needs a positive point or a box"),
    "empty prompt": (one_object(), "objects[0].prompts[0]: needs a positive point or a box"),
    "huge number": ('{"objects": [{"id": 1, "prompts": [{"frame": 0, "positive": [[1' + "0" * 400 + ', 2]]}]}]}',
                    "... is too large for a pixel coordinate (at most 1e+09)"),
    "thousands of digits": ('{"objects": [{"id": 1' + "0" * 5000 + '}]}', "not usable JSON"),
    "absurd nesting": ("[" * 100000 + "]" * 100000, "not usable JSON"),
}


@pytest.mark.parametrize("case", list(BAD_CASES), ids=list(BAD_CASES))
def test_bad_file_is_one_line_error_naming_file_and_place(tmp_path, case):
    content, expected = BAD_CASES[case]
    path = write_json(tmp_path, content)
    message = raises_input_error(lambda: load_clicks(path), path)
    assert expected in message


def test_missing_and_undecodable_files(tmp_path):
    missing = tmp_path / "nope.json"
    assert "no such file" in raises_input_error(lambda: load_clicks(missing), missing)
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"objects": [{"id": 1, "name": "caf\u00e9"}]}'.encode("latin-1"))
    assert "not UTF-8" in raises_input_error(lambda: load_clicks(latin), latin)


def test_prompts_built_in_code_get_the_same_checks():
    def prompt(frame, points, labels, **kw):
        return FramePrompt(frame, np.array(points, np.float32).reshape(-1, 2), np.array(labels, np.int32), **kw)

    good = ObjectPrompts(3, None, [prompt(0, [[5, 5]], [1]), prompt(4, [], [], box=np.array([0, 0, 4, 4], np.float32))])
    check_prompts([good])
    bad = {
        "objects[0].prompts[0].points: must be a float32 [N, 2] array, got float64 [1, 2]":
            ObjectPrompts(3, None, [FramePrompt(0, np.array([[5.0, 5.0]]), np.array([1], np.int32))]),
        "objects[0].prompts[0].labels: must be 1 (positive) or 0 (negative)":
            ObjectPrompts(3, None, [prompt(0, [[5, 5]], [2])]),
        "objects[0].prompts[1].frame: frame 0 is listed after frame 4":
            ObjectPrompts(3, None, [prompt(4, [[5, 5]], [1]), prompt(0, [[5, 5]], [1])]),
        "objects[0].prompts[0].mask: is empty":
            ObjectPrompts(3, None, [prompt(0, [], [], mask=np.zeros((4, 4), bool))]),
        "objects[0].prompts[0].positive[0]: negative coordinate":
            ObjectPrompts(3, None, [prompt(0, [[-1, 5]], [1])]),
    }
    for expected, obj in bad.items():
        with pytest.raises(InputError, match=re.escape(expected)):
            check_prompts([obj])
    with pytest.raises(InputError, match=r"objects\[1\].id: id 3 is already used"):
        check_prompts([good, good])


# ---------------------------------------------------------------------- schema
def _schema() -> dict:
    return json.loads(resources.files("samtrack").joinpath("schemas/clicks.schema.json").read_text())


def test_schema_lists_the_keys_the_loader_accepts():
    schema = _schema()
    levels = [(schema, TOP_KEYS), (schema["$defs"]["object"], OBJECT_KEYS), (schema["$defs"]["prompt"], PROMPT_KEYS)]
    for node, keys in levels:
        assert set(node["properties"]) == set(keys)
        assert set(node["required"]) == {k for k, required in keys.items() if required}
        assert node["additionalProperties"] is False
        assert all(p.get("description") for p in node["properties"].values())
    obj_id = schema["$defs"]["object"]["properties"]["id"]
    assert (obj_id["minimum"], obj_id["maximum"]) == (1, 254)


def test_schema_agrees_with_loader_on_examples(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(_schema())
    validator = jsonschema.Draft202012Validator(_schema())
    assert not list(validator.iter_errors(GOOD))
    # Cases the schema can express (not duplicate ids, frame order or box corner order).
    expressible = ["top not object", "unknown top key", "missing objects", "version 2", "objects empty", "unknown object key",
                   "id string", "id bool", "id 0", "id 255", "name int", "prompts empty", "unknown prompt key", "missing frame",
                   "frame float", "frame negative", "point too long", "negative positive coordinate", "box wrong length",
                   "box negative", "object without positives", "empty prompt"]
    for case in expressible:
        assert list(validator.iter_errors(BAD_CASES[case][0])), case


# ---------------------------------------------------------------------- mask prompts
def save_png(tmp_path: Path, array: np.ndarray, mode: str | None = None, name: str = "mask.png", palette: bool = False) -> Path:
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    if palette:
        image.putpalette(bytes(range(256)) * 3)
    path = tmp_path / name
    image.save(path)
    return path


def test_binary_mask_prompt(tmp_path):
    array = np.zeros((30, 40), np.uint8)
    array[5:10, 8:20] = 255
    for mode in ("L", "1"):
        objects = load_mask_prompt(save_png(tmp_path, array, mode, name=f"{mode}.png"), frame=12)
        assert [o.obj_id for o in objects] == [1]
        (prompt,) = objects[0].prompts
        assert objects[0].name is None and prompt.frame == 12 and objects[0].first_frame == 12
        assert prompt.mask.dtype == bool
        np.testing.assert_array_equal(prompt.mask, array > 0)
        assert prompt.points.shape == (0, 2) and prompt.labels.shape == (0,)
        check_prompts(objects)


def test_palette_mask_prompt_gives_one_object_per_id_and_ignores_void(tmp_path):
    array = np.zeros((30, 40), np.uint8)
    array[0:5, 0:5] = 3
    array[10:20, 10:20] = 1
    array[25:, :] = 255  # void: neither an object nor background in DAVIS
    path = save_png(tmp_path, array, palette=True)
    assert Image.open(path).mode == "P"
    objects = load_mask_prompt(path, frame=0)
    assert [o.obj_id for o in objects] == [1, 3]
    for obj in objects:
        np.testing.assert_array_equal(obj.prompts[0].mask, array == obj.obj_id)


def test_la_mask_uses_grey_and_ignores_alpha(tmp_path):
    grey = np.zeros((20, 20), np.uint8)
    grey[2:6, 2:6] = 200
    alpha = np.full((20, 20), 255, np.uint8)
    alpha[10:, 10:] = 0  # transparent but grey 0: stays background
    alpha[2:4, 2:4] = 0  # transparent but grey 200: still the object
    path = save_png(tmp_path, np.stack([grey, alpha], axis=-1))
    assert Image.open(path).mode == "LA"
    (obj,) = load_mask_prompt(path, frame=0)
    np.testing.assert_array_equal(obj.prompts[0].mask, grey > 0)


def test_rgb_mask_only_when_grey(tmp_path):
    grey = np.zeros((20, 20), np.uint8)
    grey[3:9, 4:7] = 255
    path = save_png(tmp_path, np.stack([grey] * 3, axis=-1), name="grey.png")
    (obj,) = load_mask_prompt(path, frame=0)
    np.testing.assert_array_equal(obj.prompts[0].mask, grey > 0)
    colour = np.zeros((20, 20, 3), np.uint8)
    colour[3:9, 4:7] = (128, 0, 0)
    path = save_png(tmp_path, colour, name="colour.png")
    assert "colour RGB mask" in raises_input_error(lambda: load_mask_prompt(path, 0), path)


@pytest.mark.parametrize("fill", [0, 255])
def test_empty_mask_is_an_error(tmp_path, fill):
    path = save_png(tmp_path, np.full((10, 10), fill, np.uint8), palette=True)
    assert "no object pixels" in raises_input_error(lambda: load_mask_prompt(path, 0), path)


def test_mask_file_problems(tmp_path):
    missing = tmp_path / "missing.png"
    assert "no such file" in raises_input_error(lambda: load_mask_prompt(missing, 0), missing)
    text = tmp_path / "text.png"
    text.write_text("not an image")
    assert "not an image" in raises_input_error(lambda: load_mask_prompt(text, 0), text)
    jpeg = tmp_path / "mask.jpg"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(jpeg)
    assert "expected a PNG, got JPEG" in raises_input_error(lambda: load_mask_prompt(jpeg, 0), jpeg)
    good = save_png(tmp_path, np.full((8, 8), 255, np.uint8))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:-30])
    assert "cannot decode" in raises_input_error(lambda: load_mask_prompt(truncated, 0), truncated)
    assert "frame must be an integer >= 0" in raises_input_error(lambda: load_mask_prompt(good, -2), good)


# ---------------------------------------------------------------------- against the video
def test_validate_prompts_accepts_in_range(tmp_path):
    path = write_json(tmp_path, one_object(positive=[[0, 0], [99.5, 49.9]], box=[0, 0, 100, 50]))
    validate_prompts(load_clicks(path), path, n_frames=1, size=(50, 100))


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ({"positive": [[1, 1], [100, 10]]}, "objects[0].prompts[0].positive[1]: [100, 10] is outside the 100x50 frame"),
        ({"positive": [[1, 1]], "negative": [[5, 50]]}, "objects[0].prompts[0].negative[0]: [5, 50] is outside the 100x50 frame"),
        ({"box": [10, 10, 100.5, 20]}, "objects[0].prompts[0].box: [10, 10, 100.5, 20] is outside the 100x50 frame"),
        ({"box": [10, 10, 20, 51]}, "objects[0].prompts[0].box: [10, 10, 20, 51] is outside"),
    ],
)
def test_validate_prompts_out_of_frame(tmp_path, prompt, expected):
    path = write_json(tmp_path, one_object(**prompt))
    objects = load_clicks(path)
    message = raises_input_error(lambda: validate_prompts(objects, path, n_frames=5, size=(50, 100)), path)
    assert expected in message


def test_validate_prompts_past_the_end(tmp_path):
    data = {"objects": [{"id": 2, "prompts": [{"frame": 0, "positive": [[1, 1]]}, {"frame": 120, "positive": [[1, 1]]}]}]}
    path = write_json(tmp_path, data)
    objects = load_clicks(path)
    validate_prompts(objects, path, n_frames=121, size=(50, 100))
    message = raises_input_error(lambda: validate_prompts(objects, path, n_frames=100, size=(50, 100)), path)
    assert "objects[0].prompts[1].frame: frame 120 is past the end of the video (100 frames)" in message


def test_validate_prompts_mask_size(tmp_path):
    array = np.zeros((30, 40), np.uint8)
    array[5:10, 5:10] = 1
    path = save_png(tmp_path, array, palette=True)
    objects = load_mask_prompt(path, frame=0)
    validate_prompts(objects, path, n_frames=1, size=(30, 40))
    message = raises_input_error(lambda: validate_prompts(objects, path, n_frames=1, size=(480, 854)), path)
    assert "the mask is 40x30 but the video frames are 854x480" in message
    message = raises_input_error(lambda: validate_prompts(load_mask_prompt(path, frame=3), path, n_frames=3, size=(30, 40)), path)
    assert "frame 3 is past the end of the video (3 frames)" in message
