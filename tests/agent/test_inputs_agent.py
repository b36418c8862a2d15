"""Representative inputs on the device: the blob read back and checked (agent/inputs.py), the
harness feeding it instead of the seeded pool, each backend's inputs_from checking shapes and
dtypes, the model file's inputs read without a framework, and through the real agent the
data-dependent model's p50 following what it is fed."""

import os
import re
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from fixtures_models import LOOPED_SIDE, looped_tflite, two_input_tflite  # noqa: E402
from fixtures_models import tiny_models, tiny_onnx  # noqa: E402,F401 - fixtures

from agent import fsutil, harness, schema, tflite_model  # noqa: E402
from agent import inputs as agent_inputs  # noqa: E402
from agent.backends import get_backend_class  # noqa: E402
from agent.backends.base import Backend, BadModel, check_samples  # noqa: E402
from agent_helpers import REPO, FAST_SETTINGS, make_job, run_agent, synthetic_case  # noqa: E402
from extras import needs  # noqa: E402
from fake_harness import MS, FakeBackend, FakeClock  # noqa: E402


def worker_wired():
    with open(os.path.join(REPO, "agent", "worker.py")) as f:
        return re.search(r"run_measurement\([^)]*inputs=", f.read()) is not None


wired = pytest.mark.skipif(not worker_wired(), reason="agent/worker.py does not pass inputs= to "
                           "harness.run_measurement yet")
SHAPE = (1, LOOPED_SIDE, LOOPED_SIDE, 3)


def blob(root, samples, names=None):
    """Writes samples as an inputs blob into root/blobs; returns the job's model.inputs."""
    from orchestrator import inputs
    data = inputs.pack(samples, names or [None] * len(samples[0]))
    path, sha = inputs.write_blob(data, os.path.join(root, "blobs"))
    os.rename(str(path), os.path.join(root, "blobs", sha))
    return {"path": "blobs/" + sha, "sha256": sha, "count": len(samples), "source": "folder-x"}


def case_with(path, backend, case_id, inputs=None, **settings):
    merged = dict(FAST_SETTINGS, **settings)
    model = {"name": "m", "variant": "file", "format": "tflite", "sha256": None, "path": path,
             "synthetic_ms": None}
    if inputs is not None:
        model["inputs"] = inputs
    return {"case_id": case_id, "label": case_id, "model": model,
            "runtime": {"backend": backend, "threads": 1, "affinity": None, "precision": "fp32",
                        "options": {}}, "settings": merged}


# ---------------------------------------------------------------- the model file's inputs

@needs("ai_edge_litert")
def test_the_flatbuffer_inputs_are_the_interpreters(tiny_models):
    from ai_edge_litert.interpreter import Interpreter
    paths = [looped_tflite(), two_input_tflite()] + [str(tiny_models[v].local_path) for v in
                                                      ("tflite-fp32", "tflite-fp16", "tflite-int8")]
    for path in paths:
        interpreter = Interpreter(model_path=path)
        want = [(d["name"], [int(x) for x in d["shape"]], np.dtype(d["dtype"]).name)
                for d in interpreter.get_input_details()]
        got = [(i["name"], i["shape"], i["dtype"]) for i in tflite_model.read_model(path).inputs]
        assert got == want, path


# ---------------------------------------------------------------- the blob

def test_no_inputs_is_none_and_described_as_the_seeded_pool(tmp_path):
    case = synthetic_case("c1", input_seed=7, input_pool=3)
    assert agent_inputs.load(str(tmp_path / "runs" / "r" / "job.json"), case) is None
    assert agent_inputs.describe(case) == {"source": "random", "seed": 7, "count": 3}


def test_the_blob_loads_in_order_and_is_checked_against_the_job(workdir):
    samples = [[np.full(SHAPE, i, np.uint8)] for i in range(3)]
    entry = blob(workdir.root, samples)
    case = case_with(None, "synthetic", "c1", entry)
    job_path, _ = workdir(make_job([case]))
    got = agent_inputs.load(job_path, case)
    assert [int(s[0][0, 0, 0, 0]) for s in got] == [0, 1, 2]
    assert agent_inputs.describe(case) == {"source": "folder", "name": "folder-x",
                                           "sha256": entry["sha256"], "count": 3}
    wrong = dict(entry, count=4)
    with pytest.raises(BadModel, match="holds 3 samples, the job says 4"):
        agent_inputs.load(job_path, case_with(None, "synthetic", "c1", wrong))
    missing = dict(entry, path="blobs/" + "0" * 64)
    with pytest.raises(BadModel, match="blob not found"):
        agent_inputs.load(job_path, case_with(None, "synthetic", "c1", missing))
    path = os.path.join(workdir.root, entry["path"])
    with open(path, "r+b") as f:   # a damaged upload
        f.seek(-1, 2)
        f.write(b"\0" if f.read(1) != b"\0" else b"\1")
    with pytest.raises(BadModel, match="content sha256 [0-9a-f]{64}, the job names %s"
                       % entry["sha256"]):
        agent_inputs.load(job_path, case)


def test_a_file_that_is_not_an_inputs_blob_is_refused(tmp_path):
    import zipfile
    path = str(tmp_path / "b")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", b"")
    with pytest.raises(BadModel, match="not an inputs blob"):
        agent_inputs.read_blob(path)
    (tmp_path / "c").write_bytes(b"not a zip")
    with pytest.raises(BadModel, match="cannot read the inputs blob"):
        agent_inputs.read_blob(str(tmp_path / "c"))


# ---------------------------------------------------------------- the harness

class TakesInputs(FakeBackend):
    def inputs_from(self, samples):
        self.log.append("inputs_from")
        return ["s%d" % i for i, _ in enumerate(samples)]


def test_the_harness_rotates_the_samples_instead_of_the_seeded_pool():
    clock = FakeClock()
    b = TakesInputs(clock, latency_ns=1 * MS)
    settings = dict(schema.DEFAULT_SETTINGS, warmup_runs=2, warmup_min_s=0.0, runs=9,
                    min_duration_s=0.0, input_pool=2)
    harness.run_measurement(b, settings, clock=clock, clock_scale=1e-9,
                            inputs=[["a"], ["b"], ["c"]])
    assert "make_inputs" not in b.log and b.log.count("inputs_from") == 1
    # first inference, 2 warm-up, then measured: rotated through all 3 (input_pool ignored)
    assert b.seen[:7] == ["s0", "s0", "s1", "s0", "s1", "s2", "s0"]
    assert set(b.seen) == {"s0", "s1", "s2"}


def test_a_backend_without_inputs_from_says_so():
    class Plain(Backend):
        name = "plain"
    with pytest.raises(NotImplementedError, match="backend plain cannot take representative "
                       "inputs"):
        Plain(synthetic_case("c"), None).inputs_from([[np.zeros(1)]])


def test_check_samples_names_both_shapes_and_dtypes():
    spec = [("image", [1, 4, 4, 3], np.uint8)]
    ok = check_samples([[np.zeros((1, 4, 4, 3), np.uint8)]], spec, "tflite")
    assert ok[0][0].flags["C_CONTIGUOUS"]
    with pytest.raises(BadModel, match=r"sample 2 of 2, input image: shape \[1, 4, 4, 1\], but "
                       r"the model takes \[1, 4, 4, 3\]"):
        check_samples([[np.zeros((1, 4, 4, 3), np.uint8)], [np.zeros((1, 4, 4, 1), np.uint8)]],
                      spec, "tflite")
    with pytest.raises(BadModel, match=r"input image: dtype float32, but the model takes uint8"):
        check_samples([[np.zeros((1, 4, 4, 3), np.float32)]], spec, "tflite")
    with pytest.raises(BadModel, match=r"has 2 arrays; the model takes 1 inputs \(image\)"):
        check_samples([[np.zeros(1), np.zeros(1)]], spec, "tflite")
    # a dynamic dimension takes any size
    check_samples([[np.zeros((5, 2), np.float32)]], [("x", [None, 2], np.float32)], "onnxruntime")


# ---------------------------------------------------------------- the backends

def _loaded(backend, path, case_id="c"):
    cls = get_backend_class(backend)
    instance = cls(case_with(path, backend, case_id), path)
    instance.load()
    return instance


@needs("ai_edge_litert")
@pytest.mark.parametrize("backend", ["tflite", "litert"])
def test_tflite_and_litert_take_samples_and_refuse_a_wrong_shape(backend):
    b = _loaded(backend, looped_tflite())
    try:
        [x] = b.inputs_from([[np.zeros(SHAPE, np.uint8)]])
        b.invoke(x)
        with pytest.raises(BadModel, match=r"shape \[1, 8, 8, 3\], but the model takes "
                           r"\[1, 16, 16, 3\]"):
            b.inputs_from([[np.zeros((1, 8, 8, 3), np.uint8)]])
    finally:
        b.close()


@needs("ai_edge_litert")
def test_litert_feeds_several_inputs_in_the_model_files_order():
    b = _loaded("litert", two_input_tflite())
    try:
        zeta, alpha = np.ones((1, 4), np.float32), np.full((1, 2), 3, np.int32)
        [x] = b.inputs_from([[zeta, alpha]])
        b.invoke(x)
        assert float(b.read_outputs()[0]) == 10.0
    finally:
        b.close()


def test_litert_maps_a_signature_order_onto_the_files():
    from agent.backends.litert import _signature_order

    class Info(object):
        inputs = [{"name": "serving_default_zeta:0", "signature_name": "zeta"},
                  {"name": "serving_default_alpha:0", "signature_name": "alpha"}]
    details = [{"name": "serving_default_alpha:0", "signature_name": "alpha"},
               {"name": "serving_default_zeta:0", "signature_name": "zeta"}]
    assert _signature_order(details, Info()) == [1, 0]
    assert _signature_order(details[:1], Info()) == [0]   # cannot match: as given


@needs("onnxruntime")
def test_onnxruntime_takes_samples_and_refuses_a_wrong_dtype(tiny_onnx):
    b = _loaded("onnxruntime", str(tiny_onnx.local_path))
    try:
        [feed] = b.inputs_from([[np.zeros((1, 96, 96, 3), np.int32)]])
        assert list(feed) == ["input"]
        b.invoke(feed)
        with pytest.raises(BadModel, match=r"input input: dtype float32, but the model takes "
                           r"int32"):
            b.inputs_from([[np.zeros((1, 96, 96, 3), np.float32)]])
    finally:
        b.close()


@needs("openvino")
def test_openvino_takes_samples_and_refuses_a_wrong_shape(tiny_onnx):
    b = _loaded("openvino", str(tiny_onnx.local_path))
    try:
        [x] = b.inputs_from([[np.zeros((1, 96, 96, 3), np.int32)]])
        b.invoke(x)
        with pytest.raises(BadModel, match=r"shape \[1, 90, 96, 3\], but the model takes "
                           r"\[1, 96, 96, 3\]"):
            b.inputs_from([[np.zeros((1, 90, 96, 3), np.int32)]])
    finally:
        b.close()


@needs("tensorflow")
def test_tensorflow_takes_samples_by_sorted_input_name(tiny_models):
    folder = str(tiny_models["savedmodel"].folder)
    b = get_backend_class("tensorflow")(case_with(folder, "tensorflow", "c"), folder)
    b.load()
    try:
        [x] = b.inputs_from([[np.zeros((1, 96, 96, 3), np.int32)]])
        assert list(x) == ["input"]
        b.invoke(x)
        with pytest.raises(BadModel, match=r"dtype uint8, but the model takes int32"):
            b.inputs_from([[np.zeros((1, 96, 96, 3), np.uint8)]])
    finally:
        b.close()


def test_the_synthetic_backend_takes_anything():
    b = get_backend_class("synthetic")(synthetic_case("c"), None)
    samples = [[np.zeros(3)], [np.ones(2), np.ones(1)]]
    got = b.inputs_from(samples)
    assert len(got) == 2 and got[0] is samples[0] and got[1] is samples[1]
    with pytest.raises(BadModel):
        b.inputs_from([])


# ---------------------------------------------------------------- through the real agent

def _p50(doc):
    assert doc["status"] == "ok", doc["reason"]
    return doc["timing"]["summary"]["p50"]


@wired
@needs("ai_edge_litert")
def test_the_looped_models_p50_follows_its_inputs_through_the_agent(workdir):
    """floor(mean pixel) trips: random pixels (~127), a folder of dark samples (4..7 trips) and
    one of bright ones (250): three clearly apart p50s, each result saying what it was fed."""
    model = looped_tflite()
    dark = blob(workdir.root, [[np.full(SHAPE, 4 + i, np.uint8)] for i in range(4)])
    bright = blob(workdir.root, [[np.full(SHAPE, 250, np.uint8)] for _ in range(2)])
    settings = dict(runs=60, min_duration_s=0.2, input_pool=4)
    cases = [case_with(model, "tflite", "c-random", **settings),
             case_with(model, "tflite", "c-dark", dark, **settings),
             case_with(model, "tflite", "c-bright", bright, **settings)]
    job_path, out = workdir(make_job(cases))
    proc = run_agent(["run", job_path, "--out", out])
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    docs = dict((c["case_id"], fsutil.read_json(os.path.join(out, c["case_id"] + ".json")))
                for c in cases)
    for doc in docs.values():
        assert schema.check_result(doc) == []
    random, low, high = (_p50(docs[k]) for k in ("c-random", "c-dark", "c-bright"))
    assert random > 5 * low and high > 1.4 * random, (random, low, high)
    assert docs["c-dark"]["environment"]["inputs"] == {
        "source": "folder", "name": "folder-x", "sha256": dark["sha256"], "count": 4}
    assert docs["c-random"]["environment"]["inputs"] == {"source": "random", "seed": 0,
                                                         "count": 4}
    sys.stderr.write("looped p50 ms: random %.4f, dark %.4f, bright %.4f\n" % (random, low, high))


@wired
@needs("ai_edge_litert")
def test_samples_that_do_not_fit_fail_the_case_as_a_bad_model(workdir):
    wrong = blob(workdir.root, [[np.zeros((1, 8, 8, 3), np.uint8)]])
    case = case_with(looped_tflite(), "tflite", "c-wrong", wrong)
    job_path, out = workdir(make_job([case]))
    proc = run_agent(["run", job_path, "--out", out])
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    doc = fsutil.read_json(os.path.join(out, "c-wrong.json"))
    assert (doc["status"], doc["substatus"]) == ("failed", "bad_model")
    assert "shape [1, 8, 8, 3], but the model takes [1, 16, 16, 3]" in doc["reason"]
