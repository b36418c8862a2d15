"""The tensorrt backend: every path this machine (no GPU, no TensorRT) can run, for real.

Tests whose name ends in _no_gpu stand in for hardware with fakes of the TensorRT module and of
the CUDA binding; they check what the backend does with them (allocate once, copy, execute,
copy back, synchronize), not TensorRT itself.
"""

import importlib
import json
import os
import sys

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


def test_no_cuda_binding_is_unavailable_naming_both(monkeypatch):
    for name in ("cuda.bindings.runtime", "cuda.cudart", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
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

    class BuilderFlag(object):  # TensorRT up to 10: reduced precision by builder flag
        FP16, INT8 = "FP16", "INT8"

    class IProfiler(object):  # pybind11's base: a subclass calls IProfiler.__init__(self)
        def __init__(self):
            self.base_initialized = True

    @staticmethod
    def nptype(dtype):
        return dtype

    class Runtime(object):
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            assert data == b"fake engine"
            return FakeTRT.engine_class()


# What the fake engine's layers report to a profiler per execution (ms); the first profiled
# execution reports ten times as much (a cold one: it must not be recorded).
LAYERS = [("/conv1/Conv + /relu1/Relu", 0.25), ("/pool/MaxPool", 0.05),
          ("/fc/Gemm", 0.7), ("Reformatting CopyNode for Output Tensor 0", 0.0)]


def report_layers(ctx):
    """As TensorRT does after an execution with a profiler set: report_layer_time per layer."""
    profiler = getattr(ctx, "profiler", None)
    if profiler is None:
        return
    assert getattr(profiler, "base_initialized", False)
    ctx.profiled = getattr(ctx, "profiled", 0) + 1
    for name, ms in LAYERS:
        profiler.report_layer_time(name, ms * (10 if ctx.profiled == 1 else 1))


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
        self.engine, self.addresses, self.log = engine, {}, []  # a test may share cuda.log

    def get_tensor_shape(self, name):
        return (1, 8)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def execute_async_v3(self, stream):
        self.log.append(("execute", stream, dict(self.addresses)))
        report_layers(self)  # TensorRT 8.5+: enqueueV3 reports to a profiler too
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
    def __init__(self):
        self.log = []  # a test may share cuda.log

    def get_binding_shape(self, i):
        return (1, 8)

    def execute_async_v2(self, bindings, stream):
        self.log.append(("execute", stream, list(bindings)))
        return True  # before TensorRT 8.5: no profiler reports from an async execution

    def execute_v2(self, bindings):
        self.log.append(("execute_v2", list(bindings)))
        report_layers(self)
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
    assert facts["network"] == "weakly typed"
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


def test_op_profile_times_each_layer_through_iprofiler_after_the_measurement_fake_tensorrt_no_gpu(
        fake_gpu, tmp_path):
    path = tiny_onnx(tmp_path / "tiny.onnx")
    backend = trtb.TensorRTBackend(trt_case(path), path)
    assert backend.op_profile() is None  # before load: nothing to profile
    backend.workdir = str(tmp_path / "wd")
    backend.load()
    ctx, cuda = backend._context, backend.cuda
    ctx.log = cuda.log
    for x in backend.make_inputs(0, 2) * 2:  # the measured invokes: no profiler set
        backend.invoke(x)
    assert not getattr(ctx, "profiled", 0)
    record = backend.op_profile(runs=5)
    assert ctx.profiler is None  # unset after the pass
    assert ctx.profiled == 6     # one unrecorded execution, then five
    v3 = FakeTRT.engine_class is FakeEngineV3
    assert record["api"] == ("execute_async_v3" if v3 else "execute_v2")
    if not v3:  # TensorRT before 8.5 profiles synchronous execution only
        assert [e[0] for e in cuda.log].count("execute_v2") == 6
    assert record["status"] == "ok" and record["tool"] == "tensorrt IProfiler"
    assert record["runs"] == 5 and record["ops_total"] == 4 and record["by_type"] == []
    assert [(o["name"], o["avg_ms"], o["percent"], o["times_called"]) for o in record["ops"]] == [
        ("/conv1/Conv + /relu1/Relu", 0.25, 25.0, 1), ("/pool/MaxPool", 0.05, 5.0, 1),
        ("/fc/Gemm", 0.7, 70.0, 1), ("Reformatting CopyNode for Output Tensor 0", 0.0, 0.0, 1)]
    assert record["ops"][-1]["cdf_percent"] == 100.0
    assert [t["name"] for t in record["top"]] == ["/fc/Gemm", "/conv1/Conv + /relu1/Relu",
                                                 "/pool/MaxPool"]
    assert record["total_ms"] == 1.0 and record["top"][0]["type"] is None
    kept = backend.artifacts["layer_profile.json"]
    with open(kept) as f:
        assert json.load(f)["ops"] == record["ops"]
    backend.close()
    assert not os.path.exists(kept)  # its temporary folder goes with the backend


def test_op_profile_through_the_worker_keeps_the_layer_table_fake_tensorrt_no_gpu(
        fake_gpu, tmp_path):
    from agent import opprofile, worker
    from agent_helpers import workdir_writer
    path = tiny_onnx(tmp_path / "tiny.onnx")
    case = trt_case(path, case_id="c-trt-prof")
    case["settings"].update(op_profile=True, interval_ms=0.0)
    job = make_job([case])
    job_path, out = workdir_writer(tmp_path)(job)
    os.makedirs(out)
    doc = worker.base_result(job, case, "ok")
    doc["cooldown"] = {}
    worker._measure(job_path, job, case, doc, out)
    record = doc["environment"]["op_profile"]
    assert record["status"] == "ok" and record["top"][0]["name"] == "/fc/Gemm"
    assert record["top"][0]["percent"] == 70.0
    assert doc["environment"]["artifacts"]["layer_profile.json"] == "c-trt-prof.layer_profile.json"
    with open(os.path.join(out, "c-trt-prof.layer_profile.json")) as f:
        assert json.load(f)["top"][0]["name"] == "/fc/Gemm"
    assert doc["timing"]["runs"] >= case["settings"]["runs"]
    doc["finished_at"] = schema.utc_now()
    assert schema.check_result(doc) == []
    # a backend without a profiler of its own leaves the case to benchmark_model
    assert opprofile.from_backend(object()) is None


def test_op_profile_without_iprofiler_is_unavailable_fake_tensorrt_no_gpu(fake_gpu, tmp_path,
                                                                         monkeypatch):
    path = tiny_onnx(tmp_path / "tiny.onnx")
    backend = trtb.TensorRTBackend(trt_case(path), path)
    backend.workdir = str(tmp_path / "wd")
    backend.load()
    monkeypatch.delattr(FakeTRT, "IProfiler")
    record = backend.op_profile()
    assert record["status"] == "unavailable" and "no IProfiler" in record["reason"]
    assert backend.artifacts == {}
    backend.close()


def test_layer_times_ignore_what_a_profiler_could_not_mean():
    times = trtb.LayerTimes()
    for name, ms in (("a", 1.0), ("b", "x"), ("a", float("nan")), (3, 2.0)):
        times.add(name, ms)
    assert times.order == ["a", "b", "3"] and times.totals == {"a": 1.0, "b": 0.0, "3": 2.0}
    assert times.calls == {"a": 1, "b": 0, "3": 1}


# --- the CUDA stream handle, on the real cuda-python bindings (no GPU needed) ---------------

def test_stream_handle_is_the_native_handle_never_the_address_of_it():
    rt = pytest.importorskip("cuda.bindings.runtime")
    stream = rt.cudaStream_t(init_value=0x5A5A000)
    assert stream.getPtr() != 0x5A5A000  # the address of the handle: what the old code passed
    assert trtb.native_handle(stream) == 0x5A5A000
    helper = trtb._CudaPython.__new__(trtb._CudaPython)  # only .stream is needed
    helper.stream = stream
    assert helper.stream_handle() == 0x5A5A000


def test_real_cuda_python_without_a_driver_is_unavailable_with_the_cuda_error():
    pytest.importorskip("cuda.bindings.runtime")
    if os.path.exists("/dev/nvidia0"):
        pytest.skip("an NVIDIA GPU is here")
    with pytest.raises(BackendUnavailable) as info:
        trtb.open_cuda()
    assert info.value.reason.startswith("CUDA is not usable here: cudaError")
    assert "nvidia-smi" in info.value.hint


class _OldCudaObject(object):
    """A cuda-python object from a release before get_cuda_native_handle: int() is the handle."""

    def __int__(self):
        return 0x7000

    def getPtr(self):  # noqa: N802 (cuda-python's name)
        return 0xDEAD


class _NoHandle(object):
    def getPtr(self):  # noqa: N802
        return 0xDEAD


def test_native_handle_falls_back_to_int_and_never_to_getptr():
    assert trtb.native_handle(_OldCudaObject()) == 0x7000
    with pytest.raises(RuntimeError, match="cannot get the CUDA handle of _NoHandle"):
        trtb.native_handle(_NoHandle())
    helper = trtb._CudaPython.__new__(trtb._CudaPython)
    helper.stream = _NoHandle()  # a release where int() is gone: the old code passed 0xDEAD
    with pytest.raises(RuntimeError, match="upgrade cuda-python"):
        helper.stream_handle()


# --- engine builds across TensorRT generations (fake builder-side API) ----------------------

def fake_builder_trt(generation):
    """The builder-side tensorrt module of one generation: '8.6' and '10.8' take reduced
    precision as builder flags (8.6 with EXPLICIT_BATCH); '11.0' has no BuilderFlag.FP16/INT8,
    no platform_has_fast_*, no int8_calibrator, no IInt8EntropyCalibrator2: strongly typed only.
    The fake parser reads the 'ONNX' bytes as the model's precision: b'fp32', b'fp16', b'qdq'."""
    weak = generation != "11.0"
    log = []

    class DataType(object):
        FLOAT, HALF, INT8 = "FLOAT", "HALF", "INT8"

    class LayerType(object):
        ACTIVATION, QUANTIZE, DEQUANTIZE = "ACTIVATION", "QUANTIZE", "DEQUANTIZE"

    class Tensor(object):
        def __init__(self, name, dtype):
            self.name, self.dtype, self.shape = name, dtype, (1, 8)

    class Layer(object):
        def __init__(self, kind, dtype):
            self.type, self.num_outputs, self._out = kind, 1, Tensor("o", dtype)

        def get_output(self, i):
            return self._out

    class Network(object):
        def __init__(self, flags):
            self.flags, self.inputs, self.layers = flags, [], []

        num_inputs = property(lambda self: len(self.inputs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, i):
            return self.inputs[i]

        def get_layer(self, i):
            return self.layers[i]

    class Parser(object):
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse(self, data):
            kind = {b"fp32": DataType.FLOAT, b"fp16": DataType.HALF, b"qdq": DataType.FLOAT}[data]
            self.network.inputs.append(Tensor("x", kind))
            if data == b"qdq":
                self.network.layers += [Layer(LayerType.QUANTIZE, DataType.INT8),
                                        Layer(LayerType.DEQUANTIZE, DataType.FLOAT)]
            self.network.layers.append(Layer(LayerType.ACTIVATION, kind))
            return True

    class Config(object):
        __slots__ = ("int8_calibrator",) if weak else ()

        def set_memory_pool_limit(self, pool, size):
            log.append(("workspace", size))

        def set_flag(self, flag):
            log.append(("flag", flag))

    class Builder(object):
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            log.append(("network", flags))
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            if weak and hasattr(config, "int8_calibrator"):
                log.append(("calibrator", type(config.int8_calibrator).__name__))
            return b"engine"

    if weak:
        Builder.platform_has_fast_fp16 = Builder.platform_has_fast_int8 = True

    class Flags(object):
        STRONGLY_TYPED = 1
    if generation == "8.6":
        Flags.EXPLICIT_BATCH = 0

    module = type("tensorrt", (), {})
    module.__version__ = generation
    module.log = log
    module.Logger = FakeTRT.Logger
    module.Builder, module.OnnxParser = Builder, Parser
    module.NetworkDefinitionCreationFlag, module.DataType, module.LayerType = Flags, DataType, \
        LayerType
    module.MemoryPoolType = type("MemoryPoolType", (), {"WORKSPACE": "workspace"})
    module.nptype = staticmethod(lambda dtype: "float32")
    if weak:
        module.BuilderFlag = FakeTRT.BuilderFlag

        class IInt8EntropyCalibrator2(object):
            def __init__(self):
                pass
        module.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    else:
        module.BuilderFlag = type("BuilderFlag", (), {"STRICT_TYPES": "removed-later"})
    return module


def _build(trt, model, precision):
    return trtb.build_engine(trt, FakeCuda(), model, precision, 1 << 20,
                             lambda specs: [{"x": None}])


@pytest.mark.parametrize("generation", ["8.6", "10.8"])
def test_tensorrt_up_to_10_sets_builder_flags_for_reduced_precision_fake_builder_no_gpu(
        generation):
    trt = fake_builder_trt(generation)
    assert trtb.network_typing(trt) == "weakly typed"
    assert _build(trt, b"fp32", "fp16") == b"engine"
    assert ("flag", "FP16") in trt.log
    assert trt.log[0] == ("network", 1 if generation == "8.6" else 0)  # EXPLICIT_BATCH if any
    del trt.log[:]
    assert _build(trt, b"fp32", "int8") == b"engine"
    assert ("flag", "INT8") in trt.log and ("calibrator", "Calibrator") in trt.log


@pytest.mark.parametrize("model,precision", [(b"fp32", "fp32"), (b"fp16", "fp32"),
                                             (b"fp16", "fp16"), (b"qdq", "int8")])
def test_tensorrt_11_builds_strongly_typed_when_the_model_carries_the_precision_fake_builder_no_gpu(
        model, precision):
    trt = fake_builder_trt("11.0")
    assert trtb.network_typing(trt) == "strongly typed"
    assert _build(trt, model, precision) == b"engine"
    assert trt.log[0] == ("network", 1 << 1)  # STRONGLY_TYPED
    assert not [e for e in trt.log if e[0] in ("flag", "calibrator")]  # nothing removed is used


@pytest.mark.parametrize("model,precision,says,fix", [
    (b"fp32", "fp16", "this one has no fp16 tensors", "export an fp16 ONNX model"),
    (b"fp16", "int8", "int8 needs an ONNX model with Q/DQ", "quantize the ONNX model to QDQ"),
    (b"fp32", "int8", "int8 needs an ONNX model with Q/DQ", "quantize the ONNX model to QDQ")])
def test_tensorrt_11_skips_a_precision_the_model_does_not_carry_with_the_reason_fake_builder_no_gpu(
        model, precision, says, fix):
    trt = fake_builder_trt("11.0")
    with pytest.raises(BackendUnavailable) as info:
        _build(trt, model, precision)
    assert info.value.reason.startswith("TensorRT 11.0 builds strongly typed networks only")
    assert says in info.value.reason and info.value.hint.startswith(fix)


def test_representative_samples_become_pinned_host_arrays_in_binding_order(fake_gpu, tmp_path):
    import numpy as np
    from agent.backends.base import BadModel
    path = tiny_onnx(tmp_path / "tiny.onnx")
    backend = trtb.TensorRTBackend(trt_case(path), path)
    backend.workdir = str(tmp_path / "wd")
    backend.load()
    samples = [[np.full((1, 8), float(i), np.float32)] for i in range(3)]
    inputs = backend.inputs_from(samples)
    (in_ptr, _), _ = backend.cuda.allocs
    assert [[dev for dev, _ in x] for x in inputs] == [[in_ptr]] * 3
    assert [float(x[0][1][0, 0]) for x in inputs] == [0.0, 1.0, 2.0]
    assert inputs[0][0][1] is not samples[0][0]   # copied into the backend's own host buffer
    with pytest.raises(BadModel) as info:
        backend.inputs_from([[np.zeros((1, 9), np.float32)]])
    assert "(1, 8)" in str(info.value) or "[1, 8]" in str(info.value)
