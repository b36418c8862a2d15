"""The TensorRT backend: an engine built on the device from ONNX with the TensorRT Python API,
cached as WORKDIR/cache/tensorrt/<key>.engine, run with buffers allocated once in load().

One timed invoke = copy every input host->device, execute, copy every output device->host,
synchronize the stream ("h2d+execute+d2h"). Inputs sit in pinned host memory made before timing.
CUDA comes from cuda-python (preferred) or pycuda; both API generations of TensorRT are handled
(8.5+ named tensors and execute_async_v3, older bindings and execute_async_v2), and both ways of
asking for a reduced precision (builder flags up to TensorRT 10; strongly typed networks, where the
model's own types decide, on TensorRT 11).

With setting op_profile, op_profile() times every layer through TensorRT's IProfiler on a pass
of its own after the measurement (the profiler slows execution, so it never runs while timed).
"""

import ctypes
import importlib
import os
import shutil
import tempfile
import time

from agent import opprofile, schema
from agent.backends import devcache
from agent.backends.base import Backend, BackendUnavailable, BadModel, require_module

TRT_HINT = ("on Jetson: comes with JetPack (apt install python3-libnvinfer); "
            "on x86: pip install tensorrt")
CUDA_HINT = "pip install cuda-python (on Jetson with JetPack 4: pip3 install pycuda)"
GPU_HINT = "check the NVIDIA driver with `nvidia-smi` (on Jetson: the JetPack install)"
TIMED = "h2d+execute+d2h"
PROFILE_RUNS = 20     # profiled executions after one unrecorded one
PROFILE_NOTE = ("measured apart, after the case: TensorRT's IProfiler layer times (profiling slows "
                "execution), per-layer shares of that pass, not the case's latency")


def import_tensorrt():
    return require_module("tensorrt", "tensorrt Python module not installed", TRT_HINT)


def engine_key(model_sha256, trt_version, precision, gpu_name, builder_options):
    """The cache key of one engine build: a pure function of everything the engine depends on."""
    return devcache.key_of({"backend": "tensorrt", "model_sha256": model_sha256,
                            "tensorrt": trt_version, "precision": precision, "gpu": gpu_name,
                            "builder_options": builder_options})


def open_cuda():
    """A CUDA helper on cuda-python's runtime, else pycuda; BackendUnavailable if neither works."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):  # cuda-python >= 12.6, then older
        try:
            return _CudaPython(importlib.import_module(name))
        except ImportError:
            continue
    try:
        import pycuda.driver as driver
    except ImportError:
        raise BackendUnavailable("no CUDA Python binding: neither cuda-python nor pycuda is "
                                 "installed", hint=CUDA_HINT)
    return _PyCuda(driver)


def native_handle(obj):
    """The CUDA handle (cudaStream_t value) a cuda-python object wraps, as an int.

    cuda.bindings.utils.get_cuda_native_handle where cuda-python has it (12.8+: int() on cuda
    objects is deprecated there); int(obj) on older releases. Never obj.getPtr(): that is the
    address of the handle, not the handle, and TensorRT would read garbage as its stream.
    """
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        get_cuda_native_handle = None
    if get_cuda_native_handle is not None:
        try:
            return int(get_cuda_native_handle(obj))
        except TypeError:  # a type this release registers no getter for
            pass
    try:
        return int(obj)
    except TypeError:
        raise RuntimeError("cannot get the CUDA handle of %s from this cuda-python (neither "
                           "get_cuda_native_handle nor int() works); upgrade cuda-python"
                           % type(obj).__name__)


def _as_host_array(ptr, shape, dtype):
    import numpy as np
    size = int(np.prod(shape)) if len(shape) else 1
    raw = ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8))
    flat = np.ctypeslib.as_array(raw, (max(1, size) * dtype.itemsize,)).view(dtype)
    return flat[:size].reshape(shape)


class _CudaPython(object):
    """Stream, pinned host and device memory through cuda-python (cudart); freed in close()."""

    name = "cuda-python"

    def __init__(self, cudart):
        self.rt = cudart
        self._host, self._device = [], []
        count = self._call(cudart.cudaGetDeviceCount(), unavailable=True)
        if not count:
            raise BackendUnavailable("no NVIDIA GPU visible to CUDA", hint=GPU_HINT)
        self.stream = self._call(cudart.cudaStreamCreate(), unavailable=True)

    def _call(self, result, unavailable=False):
        err, rest = result[0], result[1:]
        if err != self.rt.cudaError_t.cudaSuccess:
            if unavailable:
                raise BackendUnavailable("CUDA is not usable here: %s" % self._error_text(err),
                                         hint=GPU_HINT)
            raise RuntimeError("CUDA error: %s" % self._error_text(err))
        return rest[0] if len(rest) == 1 else None

    def _error_text(self, err):
        """'cudaErrorInsufficientDriver (CUDA driver version is insufficient ...)'."""
        name = getattr(err, "name", None) or str(err)
        try:
            text = self.rt.cudaGetErrorString(err)[1]
            text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        except Exception:
            return name
        return "%s (%s)" % (name, text) if text else name

    def device_name(self):
        prop = self._call(self.rt.cudaGetDeviceProperties(0))
        name = prop.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return str(name).rstrip("\0")

    def stream_handle(self):
        return native_handle(self.stream)

    def host_array(self, shape, dtype):
        nbytes = max(1, int(_volume(shape))) * dtype.itemsize
        ptr = self._call(self.rt.cudaMallocHost(nbytes))
        self._host.append(ptr)
        return _as_host_array(ptr, shape, dtype)

    def device_alloc(self, nbytes):
        ptr = self._call(self.rt.cudaMalloc(max(1, nbytes)))
        self._device.append(ptr)
        return int(ptr)

    def htod_async(self, dev, host):
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpyAsync(dev, host.ctypes.data, host.nbytes, kind, self.stream))

    def dtoh_async(self, host, dev):
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.rt.cudaMemcpyAsync(host.ctypes.data, dev, host.nbytes, kind, self.stream))

    def htod(self, dev, host):
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpy(dev, host.ctypes.data, host.nbytes, kind))

    def synchronize(self):
        self._call(self.rt.cudaStreamSynchronize(self.stream))

    def close(self):
        for ptr in self._device:
            self.rt.cudaFree(ptr)
        for ptr in self._host:
            self.rt.cudaFreeHost(ptr)
        self._host, self._device = [], []
        if self.stream is not None:
            self.rt.cudaStreamDestroy(self.stream)
            self.stream = None


class _PyCuda(object):
    """The same helper on pycuda, in the device's primary context (the one TensorRT uses)."""

    name = "pycuda"

    def __init__(self, driver):
        self.drv = driver
        try:
            driver.init()
            if driver.Device.count() < 1:
                raise BackendUnavailable("no NVIDIA GPU visible to CUDA", hint=GPU_HINT)
            self.device = driver.Device(0)
            self.context = self.device.retain_primary_context()
        except driver.Error as exc:
            raise BackendUnavailable("CUDA is not usable here: %s" % exc, hint=GPU_HINT)
        self.context.push()
        self.stream = driver.Stream()
        self._device = []

    def device_name(self):
        return self.device.name()

    def stream_handle(self):
        return self.stream.handle

    def host_array(self, shape, dtype):
        return self.drv.pagelocked_empty(tuple(shape), dtype)

    def device_alloc(self, nbytes):
        alloc = self.drv.mem_alloc(max(1, nbytes))
        self._device.append(alloc)
        return int(alloc)

    def htod_async(self, dev, host):
        self.drv.memcpy_htod_async(dev, host, self.stream)

    def dtoh_async(self, host, dev):
        self.drv.memcpy_dtoh_async(host, dev, self.stream)

    def htod(self, dev, host):
        self.drv.memcpy_htod(dev, host)

    def synchronize(self):
        self.stream.synchronize()

    def close(self):
        for alloc in self._device:
            alloc.free()
        self._device = []
        if self.context is not None:
            self.context.pop()
            self.context = None


def _volume(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _fixed(shape):
    """A dynamic dimension (-1) becomes 1: engines are built and run at batch 1."""
    return tuple(1 if int(d) < 0 else int(d) for d in shape)


def seeded_arrays(specs, seed, count, allocate):
    """`count` dicts name -> array from allocate(shape, dtype), filled from RandomState(seed).

    Integer inputs get 0..255 (MoveNet's image), floats [0, 1), like the TensorFlow backend.
    """
    import numpy as np
    rng = np.random.RandomState(seed)
    pool = []
    for _ in range(count):
        arrays = {}
        for name, shape, dtype in specs:
            array = allocate(shape, dtype)
            if dtype.kind in "iu":
                array[...] = rng.randint(0, 256, shape).astype(dtype)
            elif dtype.kind == "b":
                array[...] = rng.randint(0, 2, shape).astype(dtype)
            else:
                array[...] = rng.random_sample(shape).astype(dtype)
            arrays[name] = array
        pool.append(arrays)
    return pool


def _make_calibrator(trt, cuda, batches, specs):
    """An IInt8EntropyCalibrator2 fed with `batches` (dicts name -> host array), batch size 1."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(batches)
            self._device = dict((name, cuda.device_alloc(_volume(shape) * dtype.itemsize))
                                for name, shape, dtype in specs)

        def get_batch_size(self):
            return 1

        def get_batch(self, names, *args):
            try:
                batch = next(self._batches)
            except StopIteration:
                return None
            for name in names:
                cuda.htod(self._device[name], batch[name])
            return [self._device[name] for name in names]

        def read_calibration_cache(self, *args):
            return None  # the engine itself is cached; a calibration table alone is not kept

        def write_calibration_cache(self, cache):
            return None

    return Calibrator()


def build_engine(trt, cuda, onnx_bytes, precision, workspace, calibration):
    """Serialized engine bytes from ONNX. calibration(specs) -> list of input dicts (INT8 only).

    Raises BadModel (unparsable ONNX), BackendUnavailable (precision without hardware support).
    """
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strong = network_typing(trt) == STRONG
    flags = trt.NetworkDefinitionCreationFlag
    flag = getattr(flags, "STRONGLY_TYPED" if strong else "EXPLICIT_BATCH", None)
    network = builder.create_network(1 << int(flag) if flag is not None else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BadModel("TensorRT %s cannot parse the ONNX model: %s" % (trt.__version__, errors))
    if strong:
        require_typed_precision(trt, network, precision)
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):  # TensorRT 8.4+
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:
        config.max_workspace_size = workspace
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    specs = []
    profile = None
    for tensor in inputs:
        shape = tuple(tensor.shape)
        specs.append((tensor.name, _fixed(shape), _np_dtype(trt, tensor.dtype)))
        if any(int(d) < 0 for d in shape):
            profile = profile or builder.create_optimization_profile()
            profile.set_shape(tensor.name, _fixed(shape), _fixed(shape), _fixed(shape))
    if profile is not None:
        config.add_optimization_profile(profile)
    if strong:
        pass  # the precision is the model's own: checked above, no builder flag to set
    elif precision == "fp16":
        if not getattr(builder, "platform_has_fast_fp16", True):
            raise BackendUnavailable("this GPU has no fast FP16 in TensorRT %s" % trt.__version__,
                                     hint="run this model in fp32 on this device")
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        if not getattr(builder, "platform_has_fast_int8", True):
            raise BackendUnavailable("this GPU has no fast INT8 in TensorRT %s" % trt.__version__,
                                     hint="run this model in fp16 or fp32 on this device")
        if not hasattr(trt, "IInt8EntropyCalibrator2"):
            raise BackendUnavailable("TensorRT %s has no INT8 entropy calibrator" % trt.__version__,
                                     hint="use an ONNX model with Q/DQ nodes, or fp16")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _make_calibrator(trt, cuda, calibration(specs), specs)
        if profile is not None and hasattr(config, "set_calibration_profile"):
            config.set_calibration_profile(profile)
    if hasattr(builder, "build_serialized_network"):  # TensorRT 8+
        serialized = builder.build_serialized_network(network, config)
    else:
        engine = builder.build_engine(network, config)
        serialized = engine.serialize() if engine is not None else None
    if serialized is None:
        raise RuntimeError("TensorRT %s failed to build the engine (see agent.log)"
                           % trt.__version__)
    return memoryview(serialized).tobytes()


WEAK, STRONG = "weakly typed", "strongly typed"


def network_typing(trt):
    """How this TensorRT takes a reduced precision: WEAK (builder flags FP16/INT8 let it pick
    kernels per layer; TensorRT up to 10) or STRONG (TensorRT 11 removed those flags and
    platform_has_fast_fp16/int8 and config.int8_calibrator: every tensor keeps the type the
    ONNX model gives it, so fp16 needs an fp16 model and int8 needs Q/DQ nodes)."""
    return WEAK if hasattr(trt.BuilderFlag, "FP16") else STRONG


def require_typed_precision(trt, network, precision):
    """BackendUnavailable unless a strongly typed network can run at `precision`: fp16 needs
    fp16 tensors in the model, int8 needs quantize (Q/DQ) layers; fp32 builds any model."""
    if precision == "fp32":
        return
    dtypes, quantized = set(), False
    for i in range(network.num_inputs):
        dtypes.add(network.get_input(i).dtype)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        quantized = quantized or layer.type == trt.LayerType.QUANTIZE
        for j in range(layer.num_outputs):
            dtypes.add(layer.get_output(j).dtype)
    if precision == "fp16" and trt.DataType.HALF not in dtypes:
        raise BackendUnavailable(
            "TensorRT %s builds strongly typed networks only (no BuilderFlag.FP16): the precision "
            "comes from the ONNX model, and this one has no fp16 tensors" % trt.__version__,
            hint="export an fp16 ONNX model (e.g. onnxconverter-common's float16 conversion) "
                 "and point the case at it, or run this model in fp32")
    if precision == "int8" and not quantized:
        raise BackendUnavailable(
            "TensorRT %s builds strongly typed networks only (no BuilderFlag.INT8 or INT8 "
            "calibrator): int8 needs an ONNX model with Q/DQ (QuantizeLinear) nodes, and this one "
            "has none" % trt.__version__,
            hint="quantize the ONNX model to QDQ format (TensorRT Model Optimizer, or "
                 "onnxruntime.quantization with QuantFormat.QDQ), or run it in fp16 or fp32")


def _np_dtype(trt, trt_dtype):
    import numpy as np
    return np.dtype(trt.nptype(trt_dtype))


class LayerTimes(object):
    """What IProfiler.report_layer_time reports, summed per layer over a profiling pass."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.order, self.totals, self.calls = [], {}, {}

    def add(self, layer_name, ms):
        name = str(layer_name)
        if name not in self.totals:
            self.order.append(name)
            self.totals[name], self.calls[name] = 0.0, 0
        try:
            ms = float(ms)
        except (TypeError, ValueError):
            return
        if ms == ms and ms not in (float("inf"), float("-inf")):
            self.totals[name] += ms
            self.calls[name] += 1


def make_profiler(trt, times):
    """A trt.IProfiler whose report_layer_time(layer_name, ms) adds to `times` (a LayerTimes).
    TensorRT calls it once per layer after each execute_v2 (before 8.5: synchronous execution
    only) or execute_async_v3 (8.5+); an engine built with ProfilingVerbosity NONE names its
    layers by index."""

    class Profiler(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)  # pybind11: the base must be initialized explicitly

        def report_layer_time(self, layer_name, ms):
            times.add(layer_name, ms)

    return Profiler()


class TensorRTBackend(Backend):
    """ONNX -> cached engine -> execution context with every buffer allocated in load()."""

    name = "tensorrt"
    workdir = None  # set by the worker: the device WORKDIR whose cache/ holds engines

    def __init__(self, case, model_path):
        Backend.__init__(self, case, model_path)
        self.precision = str(self.runtime.get("precision") or "fp32").lower()
        self.workspace = int(self.options["max_workspace_size_bytes"])
        settings = case["settings"]
        self.input_seed, self.input_pool = int(settings["input_seed"]), int(settings["input_pool"])
        self.trt = self.cuda = None
        self.gpu_name = self.key = self.cache_hit = self.engine_path = None
        self._convert_s = None
        self._runtime = self._engine = self._context = None
        self._tensors = []  # (name, index, is_input, shape, numpy dtype, device pointer)
        self._outputs = []  # (host pinned array, device pointer)
        self._bindings = None  # older TensorRT: device pointers by binding index
        self.artifacts = {}    # kept beside the result: the per-layer table of op_profile()
        self._tmp = None

    def load(self):
        trt = self.trt = import_tensorrt()
        if (self.case.get("model") or {}).get("format") not in (None, "onnx"):
            raise BadModel("the tensorrt backend builds engines from ONNX, got format %r"
                           % self.case["model"]["format"])
        if not self.model_path or not os.path.isfile(self.model_path):
            raise BadModel("the tensorrt backend needs an .onnx file, got %r" % self.model_path)
        if self.precision not in schema.PRECISIONS:
            raise BadModel("tensorrt: unknown precision %r" % self.precision)
        self.cuda = open_cuda()
        self.gpu_name = self.cuda.device_name()
        model_sha = ((self.case.get("model") or {}).get("sha256")
                     or devcache.file_sha256(self.model_path))
        options = {"max_workspace_size_bytes": self.workspace}
        if self.precision == "int8":
            options["calibration"] = {"input_seed": self.input_seed, "input_pool": self.input_pool}
        self.key = engine_key(model_sha, trt.__version__, self.precision, self.gpu_name, options)
        path = os.path.join(devcache.cache_root(self.workdir, self.name), self.key + ".engine")
        self.engine_path, self.cache_hit, seconds = devcache.publish_file(path, self._build)
        self._convert_s = 0.0 if self.cache_hit else seconds
        with open(self.engine_path, "rb") as f:
            data = f.read()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise RuntimeError("TensorRT %s cannot deserialize %s (see agent.log)"
                               % (trt.__version__, self.engine_path))
        self._context = self._engine.create_execution_context()
        self._allocate()

    def _build(self):
        with open(self.model_path, "rb") as f:
            onnx_bytes = f.read()

        def calibration(specs):
            return seeded_arrays(specs, self.input_seed, max(1, self.input_pool),
                                 lambda shape, dtype: _zeros(shape, dtype))
        return build_engine(self.trt, self.cuda, onnx_bytes, self.precision, self.workspace,
                            calibration)

    def _io_tensors(self):
        """[(name, index, is_input, engine shape, numpy dtype)] on either API generation."""
        trt, engine = self.trt, self._engine
        if hasattr(engine, "num_io_tensors"):  # TensorRT 8.5+
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            return [(n, i, engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT,
                     tuple(engine.get_tensor_shape(n)), _np_dtype(trt, engine.get_tensor_dtype(n)))
                    for i, n in enumerate(names)]
        return [(engine.get_binding_name(i), i, engine.binding_is_input(i),
                 tuple(engine.get_binding_shape(i)), _np_dtype(trt, engine.get_binding_dtype(i)))
                for i in range(engine.num_bindings)]

    def _allocate(self):
        """Fix dynamic input shapes at 1, then allocate device buffers and pinned output buffers."""
        ctx, v3 = self._context, hasattr(self._context, "set_tensor_address")
        io = self._io_tensors()
        for name, index, is_input, shape, _ in io:
            if is_input and any(int(d) < 0 for d in shape):
                if v3:
                    ctx.set_input_shape(name, _fixed(shape))
                else:
                    ctx.set_binding_shape(index, _fixed(shape))
        self._bindings = [0] * len(io)
        for name, index, is_input, shape, dtype in io:
            shape = _fixed(tuple(ctx.get_tensor_shape(name)) if v3 else
                           tuple(ctx.get_binding_shape(index)))
            dev = self.cuda.device_alloc(_volume(shape) * dtype.itemsize)
            self._tensors.append((name, index, is_input, shape, dtype, dev))
            self._bindings[index] = dev
            if v3:
                ctx.set_tensor_address(name, dev)
            if not is_input:
                self._outputs.append((self.cuda.host_array(shape, dtype), dev))

    def convert_seconds(self):
        """Engine build seconds on a cache miss, 0.0 on a hit (None before load)."""
        return self._convert_s

    def make_inputs(self, seed, count):
        """`count` lists of pinned host arrays, one per engine input, in binding order."""
        specs = [(t[0], t[3], t[4]) for t in self._tensors if t[2]]
        pool = seeded_arrays(specs, seed, count, self.cuda.host_array)
        devs = [t[5] for t in self._tensors if t[2]]
        return [[(dev, arrays[name]) for dev, (name, _, _) in zip(devs, specs)] for arrays in pool]

    def inputs_from(self, samples):
        """Representative samples (agent/inputs.py) as pinned host arrays, one list per sample
        in binding order, checked against the engine's inputs (base.check_samples)."""
        from agent.backends.base import check_samples
        specs = [(t[0], t[3], t[4]) for t in self._tensors if t[2]]
        devs = [t[5] for t in self._tensors if t[2]]
        out = []
        for arrays in check_samples(samples, specs, self.name):
            hosts = [self.cuda.host_array(shape, dtype) for _, shape, dtype in specs]
            for host, array in zip(hosts, arrays):
                host[...] = array
            out.append(list(zip(devs, hosts)))
        return out

    def invoke(self, inputs):
        cuda = self.cuda
        for dev, host in inputs:
            cuda.htod_async(dev, host)
        if hasattr(self._context, "execute_async_v3"):
            ok = self._context.execute_async_v3(cuda.stream_handle())
        else:
            ok = self._context.execute_async_v2(self._bindings, cuda.stream_handle())
        for host, dev in self._outputs:
            cuda.dtoh_async(host, dev)
        cuda.synchronize()
        if ok is False:
            raise RuntimeError("TensorRT execution failed (see agent.log)")

    def op_profile(self, runs=PROFILE_RUNS, max_s=60.0, clock=time.monotonic):
        """Per-layer times through IProfiler on a pass after the measurement: one unrecorded
        execution, then up to `runs` recorded ones within max_s. Returns the op_profile record
        (the TFLite table's keys; a layer has a name, no type) and keeps the table as
        layer_profile.json; None before load()."""
        trt, ctx = self.trt, self._context
        if ctx is None:
            return None
        if not hasattr(trt, "IProfiler"):
            return {"status": "unavailable", "tool": "tensorrt IProfiler",
                    "reason": "TensorRT %s has no IProfiler in its Python API" % trt.__version__}
        times = LayerTimes()
        profiler = make_profiler(trt, times)  # held here too: the context must not outlive it
        ctx.profiler = profiler
        try:
            inputs = self.make_inputs(self.input_seed, 1)[0]
            self._profiled_execute(inputs)   # first execution: not recorded
            times.reset()
            done, start = 0, clock()
            while done < runs and (done == 0 or clock() - start < max_s):
                self._profiled_execute(inputs)
                done += 1
        finally:
            try:
                ctx.profiler = None
            except (TypeError, AttributeError, ValueError):
                pass  # a binding that refuses None: the pass is over either way
        record = {"status": "ok" if times.order else "failed", "tool": "tensorrt IProfiler",
                  "version": trt.__version__, "note": PROFILE_NOTE,
                  "api": "execute_async_v3" if hasattr(ctx, "execute_async_v3") else "execute_v2"}
        record.update(opprofile.layer_table(times.totals, times.calls, times.order, done))
        if not times.order:
            record["reason"] = "TensorRT reported no layer times over %d executions" % done
        self._tmp = self._tmp or tempfile.mkdtemp(prefix="benchfleet-trt-")
        self.artifacts["layer_profile.json"] = opprofile.write_json(
            os.path.join(self._tmp, "layer_profile.json"), record)
        return record

    def _profiled_execute(self, inputs):
        """One whole inference for the profiler: h2d, execute, d2h, synchronize. Before TensorRT
        8.5 the profiler reports synchronous execute_v2 only (not execute_async_v2)."""
        cuda, ctx = self.cuda, self._context
        for dev, host in inputs:
            cuda.htod_async(dev, host)
        if hasattr(ctx, "execute_async_v3"):
            ok = ctx.execute_async_v3(cuda.stream_handle())
        else:
            cuda.synchronize()  # the inputs are on the device before the synchronous call
            ok = ctx.execute_v2(self._bindings)
        for host, dev in self._outputs:
            cuda.dtoh_async(host, dev)
        cuda.synchronize()
        if ok is False:
            raise RuntimeError("TensorRT execution failed during the profiling pass")

    def describe(self):
        trt = self.trt
        facts = {"version": trt.__version__ if trt is not None else None, "delegate": None,
                 "provider": "GPU" if self._engine is not None else None,
                 "delegation": {"ops_total": None, "ops_delegated": None},
                 "precision": self.precision, "gpu": self.gpu_name, "timed": TIMED,
                 "network": network_typing(trt) if trt is not None else None,
                 "cuda_binding": self.cuda.name if self.cuda is not None else None,
                 "cache": None if self.cache_hit is None else ("hit" if self.cache_hit else "miss"),
                 "cache_key": self.key, "engine_path": self.engine_path,
                 "convert_s": self._convert_s}
        facts["inputs"] = [{"name": t[0], "shape": list(t[3]), "dtype": t[4].name}
                           for t in self._tensors if t[2]]
        facts["outputs"] = [{"name": t[0], "shape": list(t[3]), "dtype": t[4].name}
                            for t in self._tensors if not t[2]]
        return facts

    def close(self):
        # TensorRT objects go before the memory they point at, and before the CUDA context.
        self._context = self._engine = self._runtime = None
        self._outputs, self._bindings = [], None
        if self.cuda is not None:
            self.cuda.close()
        if self._tmp:  # the worker has copied what it keeps by now
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _zeros(shape, dtype):
    import numpy as np
    return np.zeros(shape, dtype)
