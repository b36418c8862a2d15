"""agent.tflite_model on real converted models, on the movenet-tiny cache, and on crafted files.

Crafted files are written with TFLite's own generated schema (the object API TensorFlow ships),
so they are laid out exactly as a converter or edgetpu_compiler would lay them out.
"""

import os
import random
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from fixtures_models import tiny_models  # noqa: E402,F401 - a fixture

from agent import tflite_model  # noqa: E402
from extras import require  # noqa: E402


def schema():
    # The flatbuffer schema and builder come with TensorFlow; tests that craft models need both.
    require("tensorflow", "flatbuffers")
    from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


def craft_model(ops, path=None, subgraphs=1):
    """Bytes of a .tflite whose subgraphs run `ops` (builtin names or custom op names) in order.

    Custom ops (names not in BuiltinOperator) get builtin code CUSTOM and the name as custom_code,
    as edgetpu_compiler writes its edgetpu-custom-op; codes past 127 use the placeholder byte.
    """
    s = schema()
    import flatbuffers
    model = s.ModelT()
    model.version = 3
    model.operatorCodes, index = [], {}
    for name in ops:
        if name in index:
            continue
        code = s.OperatorCodeT()
        builtin = getattr(s.BuiltinOperator, name, None)
        if builtin is None:
            builtin, code.customCode = s.BuiltinOperator.CUSTOM, name
        code.builtinCode = builtin
        code.deprecatedBuiltinCode = min(builtin, 127)  # PLACEHOLDER_FOR_GREATER_OP_CODES
        code.version = 1
        index[name] = len(model.operatorCodes)
        model.operatorCodes.append(code)
    model.subgraphs = []
    for _ in range(subgraphs):
        sg = s.SubGraphT()
        sg.tensors, sg.inputs, sg.outputs = [], [], []
        sg.operators = []
        for name in ops:
            op = s.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = index[name], [], []
            sg.operators.append(op)
        model.subgraphs.append(sg)
    model.buffers = [s.BufferT()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    data = bytes(builder.Output())
    if path is not None:
        with open(str(path), "wb") as f:
            f.write(data)
    return data


@pytest.fixture(scope="module")
def converted():
    """A small float model converted by TensorFlow's own TFLiteConverter: (bytes, op names)."""
    tf = pytest.importorskip("tensorflow")
    w = tf.constant(tf.random.stateless_normal([3, 3, 3, 4], seed=[1, 2]))
    d = tf.constant(tf.random.stateless_normal([4, 2], seed=[3, 4]))

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
    def net(x):
        y = tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME"))
        y = tf.reduce_mean(y, axis=[1, 2])
        return tf.nn.softmax(tf.matmul(y, d))

    conv = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()], net)
    data = conv.convert()
    return data, interpreter_op_names(model_content=data)


def interpreter_op_names(**source):
    """Op names as the TFLite interpreter lists them, with no delegate applied."""
    from agent.backends.tflite import import_interpreter
    module, _, _ = import_interpreter()
    interpreter = module.Interpreter(
        experimental_op_resolver_type=module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        **source)
    return [op["op_name"] for op in interpreter._get_ops_details()]


def test_reads_the_ops_of_a_converted_model_as_the_interpreter_lists_them(converted):
    data, names = converted
    info = tflite_model.parse(data)
    assert info.ops() == names
    assert "CONV_2D" in names and "SOFTMAX" in names
    assert not info.is_edgetpu and info.custom_codes == []
    assert sum(info.op_counts().values()) == len(names)
    assert {c["name"] for c in info.operator_codes} == set(names)


@pytest.mark.parametrize("variant", ["tflite-fp32", "tflite-int8"])
def test_movenet_tiny_ops_match_the_interpreter(tiny_models, variant):
    path = str(tiny_models[variant].local_path)
    info = tflite_model.read_model(path)
    assert info.ops() == interpreter_op_names(model_path=path)
    assert len(info.subgraphs) == 1 and info.op_counts()["CONV_2D"] == 50
    assert ("QUANTIZE" in info.op_counts()) == (variant == "tflite-int8")


def test_builtin_names_follow_the_tensorflow_schema():
    s = schema()
    known = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    for code in range(len(tflite_model._BUILTIN_NAMES)):
        assert tflite_model.builtin_name(code) == known[code]
    assert tflite_model.builtin_name(100000) == "BUILTIN_100000"


def test_finds_edgetpu_custom_op_and_counts_ops_around_it(tmp_path):
    path = tmp_path / "m_edgetpu.tflite"
    craft_model(["QUANTIZE", "edgetpu-custom-op", "SOFTMAX", "edgetpu-custom-op", "DEQUANTIZE"],
                path)
    info = tflite_model.read_model(str(path))
    assert info.is_edgetpu and info.custom_codes == ["edgetpu-custom-op"]
    assert info.ops() == ["QUANTIZE", "edgetpu-custom-op", "SOFTMAX", "edgetpu-custom-op",
                          "DEQUANTIZE"]
    assert info.op_counts() == {"QUANTIZE": 1, "edgetpu-custom-op": 2, "SOFTMAX": 1,
                                "DEQUANTIZE": 1}
    code = info.operator_codes[1]
    assert (code["builtin_code"], code["custom_code"]) == (32, "edgetpu-custom-op")
    assert code["version"] == 1


def test_other_custom_ops_do_not_make_an_edgetpu_model():
    info = tflite_model.parse(craft_model(["CONV_2D", "TFLite_Detection_PostProcess"]))
    assert not info.is_edgetpu and info.ops() == ["CONV_2D", "TFLite_Detection_PostProcess"]


def test_codes_past_127_and_codes_only_in_the_deprecated_byte():
    # STABLEHLO_ADD (> 127) lives in builtin_code only; old files have CONV_2D only in the byte.
    info = tflite_model.parse(craft_model(["STABLEHLO_ADD", "GELU"]))
    assert info.ops() == ["STABLEHLO_ADD", "GELU"]
    s = schema()
    import flatbuffers
    model = s.ModelT.InitFromPackedBuf(craft_model(["CONV_2D"]), 0)
    model.operatorCodes[0].builtinCode = 0  # a pre-v3a writer left it at its default
    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    assert tflite_model.parse(bytes(builder.Output())).ops() == ["CONV_2D"]


def test_every_subgraph_is_read_and_a_missing_one_is_empty():
    info = tflite_model.parse(craft_model(["ADD", "MUL"], subgraphs=2))
    assert info.subgraphs == [["ADD", "MUL"], ["ADD", "MUL"]]
    assert info.ops(5) == [] and info.op_counts(5) == {}


def test_not_a_flatbuffer_names_the_file(tmp_path):
    for name, data in (("text.tflite", b"this is not a model at all"), ("empty.tflite", b""),
                       ("short.tflite", b"\x00\x00TFL")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError) as info:
            tflite_model.read_model(str(path))
        assert str(info.value) == (
            "%s: not a TFLite flatbuffer (no 'TFL3' identifier at byte 4)" % path)
    with pytest.raises(IOError):
        tflite_model.read_model(str(tmp_path / "missing.tflite"))


def test_opcode_index_out_of_range_is_refused():
    s = schema()
    import flatbuffers
    model = s.ModelT.InitFromPackedBuf(craft_model(["ADD"]), 0)
    model.subgraphs[0].operators[0].opcodeIndex = 7
    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(ValueError, match="opcode_index 7 of 1 operator codes"):
        tflite_model.parse(bytes(builder.Output()))


def test_truncated_or_corrupted_files_raise_only_value_error(converted):
    # Whatever the damage, the reader answers with a ValueError or a parse; never another error.
    data = converted[0]
    for cut in list(range(8, 400, 7)) + [len(data) // 2, len(data) - 1]:
        try:
            tflite_model.parse(data[:cut])
        except ValueError:
            pass
    rng = random.Random(0)
    for _ in range(300):
        damaged = bytearray(data)
        for _ in range(4):
            damaged[rng.randrange(8, min(len(data), 2048))] = rng.randrange(256)
        try:
            tflite_model.parse(bytes(damaged))
        except ValueError:
            pass
