"""What a .tflite file holds, read without any framework: operator codes, the ops per subgraph
and the model's inputs.

A minimal flatbuffer reader (stdlib only) for the few fields benchfleet needs: whether a model is
Edge TPU-compiled, how many ops a delegate could take, and the shape, type and name of each input
(the controller converts representative inputs to them). Field numbers follow TFLite's schema.fbs.
"""

import mmap
import struct

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
_IDENTIFIER = b"TFL3"
_CUSTOM = 32

# schema.fbs field ids, per table.
_MODEL_OPERATOR_CODES, _MODEL_SUBGRAPHS, _MODEL_SIGNATURE_DEFS = 1, 2, 7
_OPCODE_DEPRECATED_BUILTIN, _OPCODE_CUSTOM, _OPCODE_VERSION, _OPCODE_BUILTIN = 0, 1, 2, 3
_SUBGRAPH_TENSORS, _SUBGRAPH_INPUTS, _SUBGRAPH_OPERATORS, _SUBGRAPH_NAME = 0, 1, 3, 4
_OPERATOR_OPCODE_INDEX = 0
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_NAME, _TENSOR_SHAPE_SIGNATURE = 0, 1, 3, 7
_SIGNATURE_INPUTS, _SIGNATURE_SUBGRAPH_INDEX = 0, 4
_TENSORMAP_NAME, _TENSORMAP_TENSOR_INDEX = 0, 1

# TensorType (schema.fbs) -> numpy dtype name; None where numpy has no such type.
TENSOR_TYPES = ("float32", "float16", "int32", "uint8", "int64", "string", "bool", "int16",
                "complex64", "int8", "float64", "complex128", "uint64", None, None, "uint32",
                "uint16", None, None)

# BuiltinOperator names by code, as the interpreter prints them (tests check this against
# TensorFlow's generated schema). A newer code than this table knows is named BUILTIN_<code>.
_BUILTIN_NAMES = """
    ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE
    EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D
    LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1
    RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS
    SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER
    BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE
    UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT
    LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG
    PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE
    EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD
    REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV
    REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU
    SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE
    RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE
    NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM
    BATCH_MATMUL PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D
    IMAG REAL COMPLEX_ABS HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL
    CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS
    RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE
    RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2
    UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT STABLEHLO_LOGISTIC STABLEHLO_ADD
    STABLEHLO_DIVIDE STABLEHLO_MULTIPLY STABLEHLO_MAXIMUM STABLEHLO_RESHAPE STABLEHLO_CLAMP
    STABLEHLO_CONCATENATE STABLEHLO_BROADCAST_IN_DIM STABLEHLO_CONVOLUTION STABLEHLO_SLICE
    STABLEHLO_CUSTOM_CALL STABLEHLO_REDUCE STABLEHLO_ABS STABLEHLO_AND STABLEHLO_COSINE
    STABLEHLO_EXPONENTIAL STABLEHLO_FLOOR STABLEHLO_LOG STABLEHLO_MINIMUM STABLEHLO_NEGATE
    STABLEHLO_OR STABLEHLO_POWER STABLEHLO_REMAINDER STABLEHLO_RSQRT STABLEHLO_SELECT
    STABLEHLO_SUBTRACT STABLEHLO_TANH STABLEHLO_SCATTER STABLEHLO_COMPARE STABLEHLO_CONVERT
    STABLEHLO_DYNAMIC_SLICE STABLEHLO_DYNAMIC_UPDATE_SLICE STABLEHLO_PAD STABLEHLO_IOTA
    STABLEHLO_DOT_GENERAL STABLEHLO_REDUCE_WINDOW STABLEHLO_SORT STABLEHLO_WHILE
    STABLEHLO_GATHER STABLEHLO_TRANSPOSE DILATE STABLEHLO_RNG_BIT_GENERATOR REDUCE_WINDOW
    STABLEHLO_COMPOSITE STABLEHLO_SHIFT_LEFT STABLEHLO_CBRT STABLEHLO_CASE
""".split()


def builtin_name(code):
    return _BUILTIN_NAMES[code] if 0 <= code < len(_BUILTIN_NAMES) else "BUILTIN_%d" % code


class ModelInfo(object):
    """The operator codes of a model and, per subgraph, the op name of every operator in order.

    operator_codes: [{"builtin_code": int, "custom_code": str or None, "version": int,
    "name": str}]; subgraphs: [[op name, ...], ...] (subgraph 0 is the one the interpreter runs).
    """

    def __init__(self, operator_codes, subgraphs, inputs=None, inputs_error=None):
        self.operator_codes = operator_codes
        self.subgraphs = subgraphs
        # Why the inputs could not be read (a malformed tensor table), else None: the ops are
        # what a backend needs, so that alone does not make the file unreadable.
        self.inputs_error = inputs_error
        # Subgraph 0's inputs in its order (the interpreter's get_input_details order): {"name":
        # tensor name, "signature_name": its name in a signature or None, "shape": [int],
        # "shape_signature": [int] (-1: dynamic) or None, "dtype": numpy dtype name or
        # "TensorType <n>"}.
        self.inputs = list(inputs or [])

    @property
    def custom_codes(self):
        return [c["custom_code"] for c in self.operator_codes if c["custom_code"] is not None]

    @property
    def is_edgetpu(self):
        """True for an edgetpu_compiler output: its TPU segments are edgetpu-custom-op nodes."""
        return EDGETPU_CUSTOM_OP in self.custom_codes

    def ops(self, subgraph=0):
        """Op names of one subgraph, in file order ([] when the model has no such subgraph)."""
        return list(self.subgraphs[subgraph]) if subgraph < len(self.subgraphs) else []

    def op_counts(self, subgraph=0):
        """{op name: count} of one subgraph."""
        counts = {}
        for name in self.ops(subgraph):
            counts[name] = counts.get(name, 0) + 1
        return counts


class _Reader(object):
    """Bounds-checked flatbuffer access: an offset outside the file raises ValueError."""

    def __init__(self, buf):
        self.buf = buf

    def _u(self, fmt, pos):
        if pos < 0:
            raise ValueError("offset %d before the start of the file" % pos)
        try:
            return struct.unpack_from(fmt, self.buf, pos)[0]
        except struct.error:
            raise ValueError("offset %d past the end of the file" % pos)

    def root(self):
        return self._u("<I", 0)

    def _field(self, table, field):
        """Position of `field` in the table at `table`; None when absent (the default applies)."""
        vtable = table - self._u("<i", table)
        vtable_size = self._u("<H", vtable)
        slot = 4 + 2 * field
        if slot + 2 > vtable_size:
            return None
        offset = self._u("<H", vtable + slot)
        return table + offset if offset else None

    def scalar(self, table, field, fmt, default):
        pos = self._field(table, field)
        return default if pos is None else self._u(fmt, pos)

    def _indirect(self, pos):
        return pos + self._u("<I", pos)

    def _vector(self, table, field, what):
        """(start, length) of a vector field of 4-byte items, checked against the file's end;
        None when the field is absent."""
        pos = self._field(table, field)
        if pos is None:
            return None
        vec = self._indirect(pos)
        n = self._u("<I", vec)
        if vec + 4 + 4 * n > len(self.buf):
            raise ValueError("vector of %d %s at %d runs past the end of the file" % (n, what, vec))
        return vec, n

    def tables(self, table, field):
        """Positions of the tables in a vector-of-tables field ([] when absent)."""
        found = self._vector(table, field, "entries")
        if found is None:
            return []
        vec, n = found
        return [self._indirect(vec + 4 + 4 * i) for i in range(n)]

    def ints(self, table, field):
        """A vector of int32 ([] when absent)."""
        found = self._vector(table, field, "ints")
        if found is None:
            return []
        vec, n = found
        return list(struct.unpack_from("<%di" % n, self.buf, vec + 4))

    def present(self, table, field):
        return self._field(table, field) is not None

    def string(self, table, field):
        pos = self._field(table, field)
        if pos is None:
            return None
        start = self._indirect(pos)
        n = self._u("<I", start)
        data = self.buf[start + 4:start + 4 + n]
        if len(data) != n:
            raise ValueError("string at %d runs past the end of the file" % start)
        return bytes(data).decode("utf-8", "replace")


def _operator_code(r, table):
    deprecated = r.scalar(table, _OPCODE_DEPRECATED_BUILTIN, "<b", 0)
    builtin = r.scalar(table, _OPCODE_BUILTIN, "<i", 0)
    # Files before schema v3a store codes < 127 only in the deprecated byte; newer ones use both.
    code = max(deprecated, builtin)
    custom = r.string(table, _OPCODE_CUSTOM)
    name = custom if code == _CUSTOM and custom is not None else builtin_name(code)
    return {"builtin_code": code, "custom_code": custom,
            "version": r.scalar(table, _OPCODE_VERSION, "<i", 1), "name": name}


def parse(buf):
    """ModelInfo of a .tflite file's bytes (any buffer).

    Raises:
        ValueError: not a TFLite flatbuffer, or a corrupt/truncated one (the message says where).
    """
    if len(buf) < 8 or bytes(buf[4:8]) != _IDENTIFIER:
        raise ValueError("not a TFLite flatbuffer (no 'TFL3' identifier at byte 4)")
    r = _Reader(buf)
    model = r.root()
    codes = [_operator_code(r, t) for t in r.tables(model, _MODEL_OPERATOR_CODES)]
    subgraphs = []
    for sg in r.tables(model, _MODEL_SUBGRAPHS):
        names = []
        for op in r.tables(sg, _SUBGRAPH_OPERATORS):
            index = r.scalar(op, _OPERATOR_OPCODE_INDEX, "<I", 0)
            if index >= len(codes):
                raise ValueError("operator uses opcode_index %d of %d operator codes"
                                 % (index, len(codes)))
            names.append(codes[index]["name"])
        subgraphs.append(names)
    try:
        return ModelInfo(codes, subgraphs, _inputs(r, model))
    except ValueError as exc:
        return ModelInfo(codes, subgraphs, [], "its inputs cannot be read: %s" % exc)


def _inputs(r, model):
    """Subgraph 0's input tensors (ModelInfo.inputs), with their signature names."""
    graphs = r.tables(model, _MODEL_SUBGRAPHS)
    if not graphs:
        return []
    tensors = r.tables(graphs[0], _SUBGRAPH_TENSORS)
    signature = {}
    for sig in r.tables(model, _MODEL_SIGNATURE_DEFS):
        if r.scalar(sig, _SIGNATURE_SUBGRAPH_INDEX, "<I", 0) != 0:
            continue
        for entry in r.tables(sig, _SIGNATURE_INPUTS):
            index = r.scalar(entry, _TENSORMAP_TENSOR_INDEX, "<I", 0)
            signature.setdefault(index, r.string(entry, _TENSORMAP_NAME))
        break
    out = []
    for index in r.ints(graphs[0], _SUBGRAPH_INPUTS):
        if not 0 <= index < len(tensors):
            raise ValueError("subgraph input %d is not one of its %d tensors"
                             % (index, len(tensors)))
        t = tensors[index]
        code = r.scalar(t, _TENSOR_TYPE, "<b", 0)
        dtype = TENSOR_TYPES[code] if 0 <= code < len(TENSOR_TYPES) else None
        out.append({"name": r.string(t, _TENSOR_NAME), "signature_name": signature.get(index),
                    "shape": r.ints(t, _TENSOR_SHAPE),
                    "shape_signature": (r.ints(t, _TENSOR_SHAPE_SIGNATURE)
                                        if r.present(t, _TENSOR_SHAPE_SIGNATURE) else None),
                    "dtype": dtype or "TensorType %d" % code})
    return out


def read_model(path):
    """ModelInfo of the .tflite file at `path`.

    The file is memory-mapped, so a large model costs only the pages its tables sit on.
    Raises:
        ValueError: not a (valid) TFLite flatbuffer; the message starts with the path.
        IOError/OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        try:
            view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            view = f.read()
        try:
            return parse(view)
        except ValueError as exc:
            raise ValueError("%s: %s" % (path, exc))
        finally:
            if isinstance(view, mmap.mmap):
                view.close()
