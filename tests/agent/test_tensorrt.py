"""The tensorrt backend: every path this machine (no GPU, no TensorRT) can run, for real.

Tests whose name ends in _no_gpu stand in for hardware with fakes of the TensorRT module and of
the CUDA binding; they check what the backend does with them (allocate once, copy, execute,
copy back, synchronize), not TensorRT itself.
"""

import importlib
import os

import pytest

from agent import fsutil, schema
from agent.backends import devcache, get_backend_class, tensorrt_backend as trtb
from agent.backends.base import BackendUnavailable, BadModel
from agent_helpers import FAST_SETTINGS, make_job, run_agent


def _importable(name):
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def tiny_onnx(path):
    """A real one-op ONNX model (Relu on float32[1, 8]) written with the onnx package."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return str(path)


def trt_case(path, precision="fp16", case_id="c-trt"):
    return {"case_id": case_id, "label": "tiny tensorrt %s" % precision,
            "model": {"name": "tiny", "variant": "onnx", "format": "onnx",
                      "sha256": devcache.file_sha256(path), "path": path, "synthetic_ms": None},
            "runtime": {"backend": "tensorrt", "threads": None, "affinity": None,
                        "precision": precision, "options": {}},
            "settings": dict(FAST_SETTINGS)}


@pytest.mark.skipif(_importable("tensorrt"), reason="tensorrt is installed here")
def test_tensorrt_missing_is_skipped_with_hint_through_the_agent(workdir, tmp_path):
    path = tiny_onnx(tmp_path / "tiny.onnx")
    job_path, out = workdir(make_job([trt_case(path)]))
    proc = run_agent(["run", job_path, "--out", out])
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    doc = fsutil.read_json(os.path.join(out, "c-trt.json"))
    assert schema.check_result(doc) == []
    assert doc["status"] == "skipped" and doc["timing"] is None
    assert doc["reason"].startswith("tensorrt Python module not installed")
    assert doc["hint"] == trtb.TRT_HINT and "JetPack" in doc["hint"]
    assert not os.path.exists(os.path.join(workdir.root, "cache", "tensorrt"))


@pytest.mark.skipif(any(_importable(m) for m in ("cuda", "pycuda")),
                    reason="a CUDA binding is installed here")
def test_no_cuda_binding_is_unavailable_naming_both():
    with pytest.raises(BackendUnavailable) as info:
        trtb.open_cuda()
    assert "cuda-python" in info.value.reason and "pycuda" in info.value.reason
    assert "pip install cuda-python" in info.value.hint


def test_a_non_onnx_model_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(trtb, "import_tensorrt", lambda: FakeTRT)
    case = trt_case(tiny_onnx(tmp_path / "m.onnx"))
    case["model"]["format"] = "tflite"
    with pytest.raises(BadModel, match="from ONNX"):
        trtb.TensorRTBackend(case, case["model"]["path"]).load()


BASE = dict(model_sha256="c" * 64, trt_version="8.5.2", precision="fp16", gpu_name="Orin",
            builder_options={"max_workspace_size_bytes": 1 << 30})


@pytest.mark.parametrize("field,value", [
    ("model_sha256", "d" * 64), ("trt_version", "10.3.0"), ("precision", "int8"),
    ("gpu_name", "NVIDIA Tegra X1"), ("builder_options", {"max_workspace_size_bytes": 1 << 28})])
def test_engine_key_changes_with_each_input_and_is_stable_otherwise(field, value):
    key = trtb.engine_key(**BASE)
    assert trtb.engine_key(**dict(BASE)) == key
    assert trtb.engine_key(**dict(BASE, **{field: value})) != key


def test_seeded_arrays_are_reproducible_and_in_range():
    import numpy as np
    specs = [("image", (1, 4, 4, 3), np.dtype("int32")), ("scale", (1, 2), np.dtype("float32"))]
    a = trtb.seeded_arrays(specs, 7, 3, np.zeros)
    b = trtb.seeded_arrays(specs, 7, 3, np.zeros)
    assert all((x["image"] == y["image"]).all() for x, y in zip(a, b))
    assert not (a[0]["image"] == a[1]["image"]).all()
    assert a[0]["image"].min() >= 0 and a[0]["image"].max() <= 255
    assert 0.0 <= a[0]["scale"].min() and a[0]["scale"].max() < 1.0


def test_engine_file_is_published_atomically_fake_builder_no_gpu(tmp_path):
    path = str(tmp_path / "cache" / "tensorrt" / "k.engine")

    def failing():
        raise RuntimeError("builder ran out of memory")
    with pytest.raises(RuntimeError):
        devcache.publish_file(path, failing)
    assert not os.path.exists(path)
    ticks = iter([1.0, 4.0])
    assert devcache.publish_file(path, lambda: b"engine", clock=lambda: next(ticks)) == \
        (path, False, 3.0)
    assert devcache.publish_file(path, failing) == (path, True, 0.0)
    assert os.listdir(os.path.dirname(path)) == ["k.engine"]  # no temp file left


# --- fakes for the GPU-only part ------------------------------------------------------------

class FakeTRT(object):
    """The parts of the tensorrt module the backend touches after the build."""

    __version__ = "0.0-fake"

    class Logger(object):
        WARNING = 2

        def __init__(self, level):
            pass

    class TensorIOMode(object):
        INPUT, OUTPUT = "in", "out"

    @staticmethod
    def nptype(dtype):
        return dtype

    class Runtime(object):
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            assert data == b"fake engine"
            return FakeTRT.engine_class()


class FakeEngineV3(object):
    io = [("input", "in", (1, 8), "float32"), ("output", "out", (-1, 8), "float32")]
    num_io_tensors = 2

    def get_tensor_name(self, i):
        return self.io[i][0]

    def _get(self, name, col):
        return next(t[col] for t in self.io if t[0] == name)

    def get_tensor_mode(self, name):
        return self._get(name, 1)

    def get_tensor_shape(self, name):
        return self._get(name, 2)

    def get_tensor_dtype(self, name):
        return self._get(name, 3)

    def create_execution_context(self):
        return FakeContextV3(self)


class FakeContextV3(object):
    def __init__(self, engine):
        self.engine, self.addresses, self.log = engine, {}, None

    def get_tensor_shape(self, name):
        return (1, 8)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def execute_async_v3(self, stream):
        self.log.append(("execute", stream, dict(self.addresses)))
        return True


class FakeEngineV2(object):
    """TensorRT before 8.5: bindings by index."""

    num_bindings = 2
    io = FakeEngineV3.io

    def get_binding_name(self, i):
        return self.io[i][0]

    def binding_is_input(self, i):
        return self.io[i][1] == "in"

    def get_binding_shape(self, i):
        return self.io[i][2]

    def get_binding_dtype(self, i):
        return self.io[i][3]

    def create_execution_context(self):
        return FakeContextV2()


class FakeContextV2(object):
    log = None

    def get_binding_shape(self, i):
        return (1, 8)

    def execute_async_v2(self, bindings, stream):
        self.log.append(("execute", stream, list(bindings)))
        return True


class FakeCuda(object):
    """Records every call; host arrays are plain numpy (no pinned memory without a GPU)."""

    name = "fake-cuda"

    def __init__(self):
        self.log, self.allocs, self.next_ptr = [], [], 0x1000

    def device_name(self):
        return "Fake GPU (no GPU here)"

    def stream_handle(self):
        return 77

    def host_array(self, shape, dtype):
        import numpy as np
        return np.zeros(shape, dtype)

    def device_alloc(self, nbytes):
        self.next_ptr += 0x1000
        self.allocs.append((self.next_ptr, nbytes))
        return self.next_ptr

    def htod_async(self, dev, host):
        self.log.append(("h2d", dev, host.shape))

    def dtoh_async(self, host, dev):
        self.log.append(("d2h", dev, host.shape))

    def synchronize(self):
        self.log.append(("sync",))

    def close(self):
        self.log.append(("close",))


@pytest.fixture(params=["v3", "v2"])
def fake_gpu(request, monkeypatch):
    FakeTRT.engine_class = FakeEngineV3 if request.param == "v3" else FakeEngineV2
    builds = []
    monkeypatch.setattr(trtb, "import_tensorrt", lambda: FakeTRT)
    monkeypatch.setattr(trtb, "open_cuda", FakeCuda)

    def fake_build(trt, cuda, onnx_bytes, precision, workspace, calibration):
        builds.append(precision)
        return b"fake engine"
    monkeypatch.setattr(trtb, "build_engine", fake_build)
    return builds


def test_buffers_allocated_once_and_invoke_copies_executes_syncs_fake_tensorrt_no_gpu(
        fake_gpu, tmp_path):
    path = tiny_onnx(tmp_path / "tiny.onnx")
    cls = get_backend_class("tensorrt")
    assert cls is trtb.TensorRTBackend
    backend = cls(trt_case(path), path)
    backend.workdir = str(tmp_path / "wd")
    backend.load()
    assert fake_gpu == ["fp16"] and backend.convert_seconds() >= 0.0
    assert os.path.isfile(os.path.join(str(tmp_path / "wd"), "cache", "tensorrt",
                                       backend.key + ".engine"))
    cuda = backend.cuda
    assert [n for _, n in cuda.allocs] == [32, 32]  # input and output, float32[1, 8] each
    inputs = backend.make_inputs(0, 2)
    ctx = backend._context
    ctx.log = cuda.log
    for x in inputs * 3:
        backend.invoke(x)
    assert len(cuda.allocs) == 2  # nothing allocated per call
    (in_ptr, _), (out_ptr, _) = cuda.allocs
    one = cuda.log[:4]
    assert [e[0] for e in one] == ["h2d", "execute", "d2h", "sync"]
    assert one[0][1] == in_ptr and one[2][1] == out_ptr and one[1][1] == 77
    assert len(cuda.log) == 4 * 6
    facts = backend.describe()
    assert facts["timed"] == "h2d+execute+d2h" and facts["cache"] == "miss"
    assert facts["inputs"] == [{"name": "input", "shape": [1, 8], "dtype": "float32"}]
    assert facts["outputs"] == [{"name": "output", "shape": [1, 8], "dtype": "float32"}]
    backend.close()
    assert cuda.log[-1] == ("close",)

    again = cls(trt_case(path), path)
    again.workdir = str(tmp_path / "wd")
    again.load()
    assert fake_gpu == ["fp16"] and again.convert_seconds() == 0.0
    assert again.describe()["cache"] == "hit"
    again.close()
