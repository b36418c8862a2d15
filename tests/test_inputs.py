"""Representative inputs on the controller: a suite's `inputs:` folder refused at load with the
file, the field and the fix; images converted to the model's input; one blob per folder and model
variant, named by its sha256, shipped like a model; and through the real CLI, the same
data-dependent model fed random inputs and a folder gives two rows with different p50s."""

import csv
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from agent import inputs as agent_inputs
from agent import schema
from extras import have, needs
from fixtures_models import LOOPED_SIDE, looped_tflite, two_input_tflite
from orchestrator import execute, inputs, jobs
from orchestrator.config.inventory import load_inventory
from orchestrator.config.suite import load_suite
from orchestrator.errors import ConfigError
from orchestrator.inputs import InputSpec, InputsError
from orchestrator.plan import plan

ROOT = Path(__file__).resolve().parents[1]
CACHE = os.environ.get("BENCHFLEET_CACHE", "/tmp/benchfleet-test-cache")
pillow = needs("PIL")
IMAGE = InputSpec("image", (1, LOOPED_SIDE, LOOPED_SIDE, 3), "uint8")


def worker_wired():
    """agent/worker.py passes the case's inputs to the harness (agent/inputs.py load())."""
    src = (ROOT / "agent" / "worker.py").read_text()
    return re.search(r"run_measurement\([^)]*inputs=", src) is not None


wired = pytest.mark.skipif(not worker_wired(), reason="agent/worker.py does not pass inputs= to "
                           "harness.run_measurement yet")


def write_suite(tmp_path, models, matrix, name="s.yaml"):
    doc = {"name": "inp", "settings": {"warmup_runs": 3, "warmup_min_s": 0.05, "runs": 40,
                                       "min_duration_s": 0.3, "max_duration_s": 10,
                                       "case_timeout_s": 120},
           "cooldown": {"mode": "none", "seconds": 0}, "models": models, "matrix": matrix}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def problems_of(path):
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    return info.value.problems


def npy_folder(folder, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        np.save(str(folder / ("s%03d.npy" % i)), a)
    return folder


def png(path, array):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(str(path))
    return path


def tiny_npy(folder, n=2, dtype=np.int32):
    return npy_folder(folder, [np.zeros((96, 96, 3), dtype) for _ in range(n)])


# ---------------------------------------------------------------- load-time errors

def test_a_missing_or_empty_folder_is_refused_naming_the_field(tmp_path):
    path = write_suite(tmp_path, [{"name": "spin", "synthetic_ms": 0.1, "inputs": "nowhere"}],
                       [{"runtime": "synthetic"}])
    [line] = problems_of(path)
    assert line.startswith("%s: models[0].inputs: %s: no such folder"
                           % (path, tmp_path / "nowhere"))
    assert "relative to the suite file" in line
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_text("hidden files are not samples")
    path = write_suite(tmp_path, [{"name": "spin", "synthetic_ms": 0.1}],
                       [{"runtime": "synthetic", "inputs": "empty"}])
    [line] = problems_of(path)
    assert "matrix[0].inputs: %s: no sample in it (put .npy/.npz arrays or .jpg" % (
        tmp_path / "empty") in line


def test_files_that_are_not_samples_and_mixed_kinds_are_refused(tmp_path):
    folder = tiny_npy(tmp_path / "f")
    (folder / "notes.txt").write_text("x")
    path = write_suite(tmp_path, [{"name": "spin", "synthetic_ms": 0.1, "inputs": "f"}],
                       [{"runtime": "synthetic"}])
    [line] = problems_of(path)
    assert "notes.txt is not a sample" in line and "move it out" in line
    (folder / "notes.txt").unlink()
    (folder / "a.png").write_bytes(b"\x89PNG")
    [line] = problems_of(path)
    assert "mixes images (a.png) and arrays (s000.npy, s001.npy): keep one kind" in line


def test_more_samples_or_bytes_than_a_case_takes_are_refused(tmp_path):
    npy_folder(tmp_path / "many", [np.zeros(1, np.float32)] * (schema.MAX_INPUT_SAMPLES + 1))
    path = write_suite(tmp_path, [{"name": "spin", "synthetic_ms": 0.1, "inputs": "many"}],
                       [{"runtime": "synthetic"}])
    [line] = problems_of(path)
    assert "257 samples, past the 256 a case takes: keep at most 256" in line
    big = tmp_path / "big"
    big.mkdir()
    with open(str(big / "huge.npy"), "wb") as f:   # sparse: only its size is looked at
        f.truncate(schema.MAX_INPUT_BYTES + 1)
    path = write_suite(tmp_path, [{"name": "spin", "synthetic_ms": 0.1, "inputs": "big"}],
                       [{"runtime": "synthetic"}])
    [line] = problems_of(path)
    assert "64.0 MiB of samples, past the 64 MiB a case ships" in line


def test_npy_dtype_mismatch_names_both_and_the_variant(tmp_path):
    # A built-in's input is known without building it: int32 pixels, uint8 for its int8 variant.
    tiny_npy(tmp_path / "px", dtype=np.int32)
    path = write_suite(tmp_path, [{"name": "tiny", "builtin": "movenet-tiny", "inputs": "px",
                                   "variants": ["tflite-fp32", "tflite-int8"]}],
                       [{"runtime": "tflite"}])
    [line] = problems_of(path)
    assert line.startswith("%s: models[0].inputs: " % path)
    assert "s000.npy: dtype int32, but the model's input input [1,96,96,3] uint8 takes uint8: " \
           "save it as array.astype(numpy.uint8) (for tiny/tflite-int8)" in line
    # The entry that runs the int8 variant gives it its own samples: the suite loads.
    tiny_npy(tmp_path / "px8", dtype=np.uint8)
    path = write_suite(tmp_path, [{"name": "tiny", "builtin": "movenet-tiny", "inputs": "px",
                                   "variants": ["tflite-fp32", "tflite-int8"]}],
                       [{"runtime": "tflite", "variants": ["tflite-fp32"]},
                        {"runtime": "tflite", "variants": ["tflite-int8"], "inputs": "px8"}])
    suite = load_suite(path)
    assert suite.inputs_for(1, suite.models[0]) == (str(tmp_path / "px8"), "matrix[1].inputs")
    assert suite.inputs_for(0, suite.models[0]) == (str(tmp_path / "px"), "models[0].inputs")


def test_npy_shape_that_cannot_fit_names_both_shapes(tmp_path):
    npy_folder(tmp_path / "odd", [np.zeros((2, 96, 96, 3), np.int32)])
    path = write_suite(tmp_path, [{"name": "tiny", "builtin": "movenet-tiny", "inputs": "odd",
                                   "variants": ["savedmodel"]}], [{"runtime": "tensorflow"}])
    [line] = problems_of(path)
    assert "s000.npy: shape [2, 96, 96, 3] does not fit the model's input input [1,96,96,3] " \
           "int32 (one sample per file: that shape, or it without the leading batch 1)" in line


def test_a_tflite_models_input_is_read_from_its_file(tmp_path):
    model = looped_tflite()
    assert inputs.tflite_inputs(model) == [IMAGE]
    npy_folder(tmp_path / "f", [np.zeros((8, 8, 3), np.uint8)])
    path = write_suite(tmp_path, [{"name": "loop", "path": model, "inputs": "f"}],
                       [{"runtime": "tflite"}])
    [line] = problems_of(path)
    assert "shape [8, 8, 3] does not fit the model's input image [1,16,16,3] uint8" in line


@pillow
def test_an_unreadable_image_is_named(tmp_path):
    png(tmp_path / "img" / "a.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "img" / "b.jpg").write_bytes(b"not a jpeg at all")
    path = write_suite(tmp_path, [{"name": "tiny", "builtin": "movenet-tiny", "inputs": "img",
                                   "variants": ["tflite-fp32"]}], [{"runtime": "tflite"}])
    [line] = problems_of(path)
    assert "%s: cannot read this image: " % (tmp_path / "img" / "b.jpg") in line
    assert "(replace or remove it)" in line


def test_images_need_a_known_input_shape(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"\x89PNG")
    path = write_suite(tmp_path, [{"name": "spin", "synthetic_ms": 0.1, "inputs": "img"}],
                       [{"runtime": "synthetic"}])
    [line] = problems_of(path)
    assert "images are converted to the model's input shape, which the controller knows only " \
           "for .tflite files and built-in models: give this model .npy samples" in line


def test_images_without_pillow_say_how_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"\x89PNG")
    monkeypatch.setitem(sys.modules, "PIL", None)   # import PIL raises ImportError
    with pytest.raises(InputsError, match=r"a.png: images are converted on the controller with "
                       r"Pillow, which is not installed here: pip install pillow \(or save the "
                       r"samples as .npy arrays of image \[1,16,16,3\] uint8\)"):
        inputs.load_samples(tmp_path / "img", [IMAGE])


# ---------------------------------------------------------------- conversion

@pillow
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int32", "float32"])
def test_a_png_converts_to_the_input_shape_dtype_and_range(tmp_path, dtype):
    from PIL import Image
    ys, xs = np.mgrid[0:30, 0:40]
    rgb = np.stack([xs * 6, ys * 8, np.full_like(xs, 200)], axis=-1).astype(np.uint8)
    path = png(tmp_path / "img" / "grad.png", rgb)
    spec = InputSpec("image", (1, 16, 24, 3), dtype)
    [[array]], names = inputs.load_samples(tmp_path / "img", [spec])
    assert names == ["image"] and array.shape == (1, 16, 24, 3) and array.dtype == np.dtype(dtype)
    want = np.asarray(Image.open(str(path)).convert("RGB").resize((24, 16), Image.BILINEAR))
    if dtype == "uint8":
        np.testing.assert_array_equal(array[0], want)
    elif dtype == "int8":      # pixel - 128: -128..127
        np.testing.assert_array_equal(array[0], want.astype(np.int16) - 128)
    elif dtype == "int32":     # MoveNet's int32 pixels: 0..255
        np.testing.assert_array_equal(array[0], want)
    else:                      # pixel / 255 in [0, 1]
        np.testing.assert_allclose(array[0], want / 255.0, rtol=1e-6)
        assert 0.0 <= array.min() and array.max() <= 1.0


@pillow
def test_a_grayscale_input_gets_one_channel(tmp_path):
    png(tmp_path / "img" / "a.png", np.full((10, 10, 3), 90, np.uint8))
    [[array]], _ = inputs.load_samples(tmp_path / "img", [InputSpec("x", (1, 5, 5, 1), "uint8")])
    assert array.shape == (1, 5, 5, 1) and (array == 90).all()


def test_npz_samples_feed_several_inputs_by_name_or_position(tmp_path):
    specs = inputs.tflite_inputs(two_input_tflite())
    assert [(s.name, s.shape, s.dtype) for s in specs] == [("zeta", (1, 4), "float32"),
                                                           ("alpha", (1, 2), "int32")]
    folder = tmp_path / "two"
    folder.mkdir()
    np.savez(str(folder / "a.npz"), alpha=np.array([1, 2], np.int32), zeta=np.ones(4, np.float32))
    np.savez(str(folder / "b.npz"), **{"0": np.zeros((1, 4), np.float32),
                                       "1": np.full((1, 2), 7, np.int32)})
    samples, names = inputs.load_samples(folder, specs)
    assert names == ["zeta", "alpha"]
    assert [[a.shape for a in s] for s in samples] == [[(1, 4), (1, 2)]] * 2
    assert samples[0][1].tolist() == [[1, 2]] and samples[1][1].tolist() == [[7, 7]]
    np.savez(str(folder / "c.npz"), beta=np.ones(4, np.float32), alpha=np.zeros(2, np.int32))
    with pytest.raises(InputsError, match=r"c.npz: no array for input zeta \[1,4\] float32 \(it "
                       r"has alpha, beta\): name each array after its input \(zeta, alpha\)"):
        inputs.load_samples(folder, specs)
    (folder / "c.npz").unlink()
    np.save(str(folder / "d.npy"), np.ones(4, np.float32))
    with pytest.raises(InputsError, match=r"d.npy: one array, but the model takes 2 inputs"):
        inputs.load_samples(folder, specs)
    (folder / "d.npy").unlink()
    # Unknown formats: positional names only.
    with pytest.raises(InputsError, match=r"a.npz: arrays named alpha, zeta; the controller knows "
                       r"input names only for .tflite files and built-in models: name them 0, 1"):
        inputs.load_samples(folder, None)


# ---------------------------------------------------------------- ids, blobs, jobs

def _inventory(tmp_path):
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump({"devices": {"localhost": {
        "transport": "local", "python": sys.executable, "workdir": str(tmp_path / "wd")}}}))
    return load_inventory([path])


def test_inputs_change_the_case_id_and_label_only_when_given(tmp_path):
    npy_folder(tmp_path / "dark", [np.zeros((4,), np.float32)])
    models = [{"name": "spin", "synthetic_ms": 0.1}]
    plain = write_suite(tmp_path, models, [{"runtime": "synthetic"}], "a.yaml")
    fed = write_suite(tmp_path, models, [{"runtime": "synthetic"},
                                         {"runtime": "synthetic", "inputs": "dark"}], "b.yaml")
    inv = _inventory(tmp_path)
    [base] = plan(load_suite(plain), inv).devices[0].cases
    same, other = plan(load_suite(fed), inv).devices[0].cases
    assert same.case_id == base.case_id and same.inputs is None
    assert other.case_id != base.case_id and other.label == base.label + " inputs=dark"
    assert other.inputs == str(tmp_path / "dark") and other.inputs_digest == \
        inputs.digest(tmp_path / "dark")
    again = plan(load_suite(fed), inv).devices[0].cases[1]
    assert again.case_id == other.case_id   # stable across loads
    np.save(str(tmp_path / "dark" / "s000.npy"), np.ones((4,), np.float32))
    changed = plan(load_suite(fed), inv).devices[0].cases[1]
    assert changed.case_id != other.case_id   # the folder's content is in the id


def test_the_blob_is_deterministic_and_the_agent_reads_it_back(tmp_path):
    arrays = [np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3) + i for i in range(3)]
    npy_folder(tmp_path / "f", arrays)
    one = inputs.prepare(tmp_path / "f", [IMAGE], cache_dir=tmp_path / "c1")
    two = inputs.prepare(tmp_path / "f", [IMAGE], cache_dir=tmp_path / "c2")
    assert one.sha256 == two.sha256 and one.local_path.read_bytes() == two.local_path.read_bytes()
    assert one.local_path.name == one.sha256 + ".npz" and (one.count, one.source) == (3, "f")
    samples = agent_inputs.read_blob(str(one.local_path))
    assert [s[0].shape for s in samples] == [(1, 16, 16, 3)] * 3
    for got, want in zip(samples, arrays):
        np.testing.assert_array_equal(got[0][0], want)
    entry = one.job_entry()
    assert entry == {"path": "blobs/" + one.sha256, "sha256": one.sha256, "count": 3,
                     "source": "f"}
    assert schema.inputs_problems(entry) == []


@pytest.mark.parametrize("entry,problem", [
    ("x", "model.inputs: expected an object"),
    ({"path": "blobs/x", "sha256": "A" * 64, "count": 1, "source": "f"},
     "model.inputs.sha256: expected 64 lowercase hex digits"),
    ({"path": "blobs/x", "sha256": "a" * 64, "count": 0, "source": "f"},
     "model.inputs.count: must be 1 to 256 (got 0)"),
    ({"path": "blobs/x", "sha256": "a" * 64, "count": 257, "source": "f"},
     "model.inputs.count: must be 1 to 256 (got 257)"),
    ({"path": "blobs/x", "sha256": "a" * 64, "count": 1, "source": "f", "x": 1},
     "model.inputs.x: unknown field"),
    ({"sha256": "a" * 64, "count": 1, "source": "f"}, "model.inputs.path: field required"),
])
def test_the_job_checks_model_inputs(entry, problem):
    assert problem in schema.inputs_problems(entry)


def test_the_job_names_the_blob_and_ships_it_once(tmp_path):
    npy_folder(tmp_path / "f", [np.ones((3,), np.float32)] * 2)
    path = write_suite(tmp_path, [{"name": "spin", "synthetic_ms": 0.1, "inputs": "f"}],
                       [{"runtime": "synthetic", "threads": [1, 2]}])
    suite = load_suite(path)
    the_plan = plan(suite, _inventory(tmp_path))
    blobs = inputs.prepare_plan(the_plan, suite, {})
    [blob] = blobs.values()
    djob = jobs.device_job("r1", "n", suite, the_plan.devices[0], {}, {}, inputs=blobs)
    assert len(djob.job["cases"]) == 2 and djob.blobs == {blob.sha256: blob.local_path}
    for case in djob.job["cases"]:
        assert case["model"]["inputs"] == blob.job_entry()
        assert schema.check_case(case) == []
    assert execute._job_blobs(djob.job) == [blob.sha256]
    # A folder that cannot be made for a variant is that case's skipped row, never a crash.
    key = next(iter(blobs))
    djob = jobs.device_job("r1", "n", suite, the_plan.devices[0], {}, {},
                           inputs={key: "inputs f: broken"})
    assert djob.job["cases"] == []
    assert [d["reason"] for d in djob.planned] == ["inputs f: broken"] * 2


# ---------------------------------------------------------------- the real CLI

def run_cli(*args, timeout=600):
    import subprocess
    env = dict(os.environ, BENCHFLEET_CACHE=CACHE)
    return subprocess.run([sys.executable, "-m", "orchestrator"] + [str(a) for a in args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@wired
@needs("ai_edge_litert")
def test_random_and_representative_inputs_give_different_rows_through_the_cli(tmp_path):
    """The looped model runs floor(mean pixel) trips: seeded random pixels (mean ~127) against a
    folder of dark .npy samples (mean 4..7: ~20x fewer trips) and, with Pillow, one of bright
    PNGs (converted here: ~2x more), through `benchfleet run` on the local device; the second
    run uploads nothing (agent, model and inputs blobs are there)."""
    npy_folder(tmp_path / "dark", [np.full((16, 16, 3), 4 + i, np.uint8) for i in range(4)])
    matrix = [{"runtime": "tflite", "threads": [1]},
              {"runtime": "tflite", "threads": [1], "inputs": "dark"}]
    if have("PIL"):
        for i in range(3):
            png(tmp_path / "bright" / ("frame%d.png" % i), np.full((48, 64, 3), 250, np.uint8))
        matrix.append({"runtime": "tflite", "threads": [1], "inputs": "bright"})
    suite = write_suite(tmp_path, [{"name": "loop", "path": looped_tflite()}], matrix)
    inv = tmp_path / "local.yaml"
    inv.write_text(yaml.safe_dump({"devices": {"localhost": {
        "transport": "local", "python": sys.executable, "workdir": str(tmp_path / "wd")}}}))
    proc = run_cli("run", suite, "-i", inv, "--results-dir", tmp_path / "r1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "inputs dark for loop/file: 4 samples (image [1,16,16,3] uint8)" in proc.stderr
    [run_dir] = [p for p in (tmp_path / "r1").iterdir() if p.is_dir()]
    with open(run_dir / "results.csv") as f:
        rows = {r["label"]: r for r in csv.DictReader(f)}
    p50 = {k: float(r["p50_ms"]) for k, r in rows.items() if r["status"] == "ok"}
    assert len(p50) == len(matrix), rows
    random, dark = p50["loop/file tflite t1"], p50["loop/file tflite t1 inputs=dark"]
    assert random > 5 * dark, p50
    if have("PIL"):
        assert p50["loop/file tflite t1 inputs=bright"] > 1.4 * random, p50
    docs = {d["label"]: d for d in (json.loads(p.read_text()) for p in
                                    (run_dir / "raw" / "localhost").glob("c-*.json"))}
    fed = docs["loop/file tflite t1 inputs=dark"]
    assert fed["environment"]["inputs"] == {"source": "folder", "name": "dark", "count": 4,
                                            "sha256": fed["model"]["inputs"]["sha256"]}
    assert docs["loop/file tflite t1"]["environment"]["inputs"] == {"source": "random",
                                                                    "seed": 0, "count": 4}
    assert (tmp_path / "wd" / "blobs" / fed["model"]["inputs"]["sha256"]).is_file()
    assert rows["loop/file tflite t1 inputs=dark"]["inputs"] == "dark"
    assert rows["loop/file tflite t1"]["inputs"] == ""   # seeded random
    sys.stderr.write("looped p50 ms via the CLI: %s\n" % p50)
    again = run_cli("run", suite, "-i", inv, "--results-dir", tmp_path / "r2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[localhost] deployed (0 file(s) uploaded)" in again.stderr
