"""Suites: types, cross references and the matrix expansion, every problem as `file: path: message`."""

from pathlib import Path

import pytest

from agent.schema import DEFAULT_SETTINGS
from orchestrator.errors import ConfigError
from orchestrator.config.suite import BUILTIN_MODELS, BUILTIN_VARIANTS, SettingsOverride, load_suite

REPO = Path(__file__).resolve().parents[1]

HEAD = """name: t
models:
  - name: lightning
    builtin: movenet-lightning
  - name: spin
    synthetic_ms: 1.0
"""


def write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(path):
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    return info.value.problems


def test_example_suites_load_cleanly():
    quick = load_suite(REPO / "suites" / "quickstart.yaml")
    assert len(quick.expand()) == 7
    assert quick.cooldown.seconds == 1.0
    movenet = load_suite(REPO / "suites" / "movenet.yaml")
    assert movenet.settings_for(movenet.matrix[0])["runs"] == 2000
    assert movenet.cooldown.model_dump() == {"mode": "fixed", "seconds": 120.0, "delta_c": 3.0,
                                             "max_wait_s": 600.0, "rewarm_s": 2.0}


def test_quickstart_fits_in_about_a_minute():
    quick = load_suite(REPO / "suites" / "quickstart.yaml")
    cases = quick.expand()
    floor = sum(c.settings["warmup_min_s"] + c.settings["min_duration_s"] for c in cases)
    floor += quick.cooldown.seconds * (len(cases) - 1)
    assert floor <= 40  # leaves time for model loads within ~1 minute


def test_settings_merge_default_suite_entry_and_keep_types(tmp_path):
    path = write(tmp_path, HEAD + "settings: {runs: 200, min_duration_s: 2}\nmatrix:\n"
                 "  - runtime: synthetic\n    settings: {runs: 50}\n  - runtime: synthetic\n"
                 "    threads: [1]\n")
    suite = load_suite(path)
    first, second = (suite.settings_for(e) for e in suite.matrix)
    assert set(first) == set(DEFAULT_SETTINGS)
    assert (first["runs"], second["runs"]) == (50, 200)
    assert first["min_duration_s"] == 2.0 and isinstance(first["min_duration_s"], float)


def test_settings_override_knows_every_default_setting():
    assert set(SettingsOverride.model_fields) == set(DEFAULT_SETTINGS)


def test_builtin_names_match_the_model_zoo():
    zoo = pytest.importorskip("orchestrator.models.zoo")
    assert sorted(BUILTIN_MODELS) == zoo.list_builtins()
    assert tuple(BUILTIN_VARIANTS) == zoo.VARIANTS


def test_type_errors_all_at_once_with_dotted_paths(tmp_path):
    path = write(tmp_path, HEAD + "settings: {runs: 0, warmup: 5}\ncooldown: {mode: cold}\n"
                 "matrix:\n  - runtime: synthetic\n  - runtime: tflite\n    threads: [0, '2']\n")
    assert problems_of(path) == [
        "%s: settings.runs: must be 1 to 1000000 (got 0)" % path,
        "%s: settings.warmup: unknown field" % path,
        "%s: cooldown.mode: Input should be 'none', 'fixed' or 'thermal'" % path,
        "%s: matrix[1].threads[0]: must be 1 to 1024 (got 0)" % path,
        "%s: matrix[1].threads[1]: Input should be a valid integer" % path,
    ]


def test_unknown_backend_lists_allowed_names(tmp_path):
    path = write(tmp_path, HEAD + "matrix:\n  - runtime: [tflite, openvno]\n")
    assert problems_of(path) == [
        "%s: matrix[0].runtime[1]: unknown backend 'openvno'; backends: synthetic, tflite, litert, "
        "edgetpu, tensorflow, tf-trt, tensorrt, onnxruntime, openvino (or a backend_file of your "
        "own)" % path]


def test_model_needs_exactly_one_source(tmp_path):
    path = write(tmp_path, "name: t\nmodels:\n  - name: a\n    builtin: movenet-thunder\n"
                 "    synthetic_ms: 1\n  - name: b\nmatrix:\n  - runtime: synthetic\n")
    assert problems_of(path) == [
        "%s: models[0]: give exactly one of builtin, path, synthetic_ms (got builtin, "
        "synthetic_ms)" % path,
        "%s: models[1]: give exactly one of builtin, path, synthetic_ms (got none)" % path]


def test_unknown_variant_lists_allowed_names(tmp_path):
    path = write(tmp_path, "name: t\nmodels:\n  - name: a\n    builtin: movenet-thunder\n"
                 "    variants: [tflite-fp32, tflite-fp8]\nmatrix:\n  - runtime: tflite\n")
    assert problems_of(path) == [
        "%s: models[0].variants[1]: unknown variant 'tflite-fp8' for a builtin model; allowed: "
        "savedmodel, tflite-fp32, tflite-fp16, tflite-int8, onnx, int8-edgetpu" % path]


def test_user_model_path_relative_to_suite_file(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "my.tflite").write_bytes(b"x")
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"x")
    path = write(tmp_path, "name: t\nmodels:\n  - name: mine\n    path: models/my.tflite\n"
                 "  - name: sm\n    path: sm\nmatrix:\n  - runtime: [tflite, tensorflow]\n")
    suite = load_suite(path)
    assert suite.model("mine").resolved_path() == str(tmp_path / "models" / "my.tflite")
    assert [(c.model.name, c.variant, c.format, c.backend) for c in suite.expand()] == [
        ("mine", "file", "tflite", "tflite"), ("sm", "file", "savedmodel", "tensorflow")]


def test_user_model_missing_or_wrong_kind(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"x")
    path = write(tmp_path, "name: t\nmodels:\n  - name: a\n    path: gone.tflite\n"
                 "  - name: b\n    path: m.pt\nmatrix:\n  - runtime: tflite\n")
    assert problems_of(path) == [
        "%s: models[0].path: not found: %s" % (path, tmp_path / "gone.tflite"),
        "%s: models[1].path: expected a .tflite or .onnx file or a SavedModel folder (with "
        "saved_model.pb): %s" % (path, tmp_path / "m.pt")]


def test_matrix_references_checked(tmp_path):
    path = write(tmp_path, HEAD + "matrix:\n  - runtime: tflite\n    models: [thunder]\n"
                 "  - runtime: tflite\n    models: [lightning]\n    variants: [tflite-fp8]\n")
    assert problems_of(path) == [
        "%s: matrix[0].models[0]: unknown model 'thunder'; suite models: lightning, spin" % path,
        "%s: matrix[1].variants[0]: no selected model has variant 'tflite-fp8'; they have: "
        "savedmodel, tflite-fp32, tflite-int8" % path]


def test_entry_with_no_compatible_model_says_why(tmp_path):
    path = write(tmp_path, HEAD + "matrix:\n  - runtime: tensorflow\n    variants: [tflite-int8]\n")
    assert problems_of(path) == [
        "%s: matrix[0]: no model compatible with runtime tensorflow: it needs format savedmodel; "
        "selected: lightning/tflite-int8 (tflite)" % path]


def test_precision_that_no_variant_has_is_an_error(tmp_path):
    path = write(tmp_path, HEAD + "matrix:\n  - runtime: tflite\n    models: [lightning]\n"
                 "    precision: [fp16]\n")
    assert problems_of(path) == [
        "%s: matrix[0].precision: no selected variant runs at fp16 with tflite (lightning/"
        "tflite-fp32 is fp32, lightning/tflite-int8 is int8); the variant sets the precision "
        "except for tf-trt, tensorrt, openvino" % path]


def test_precision_defaults_from_variant_and_filters(tmp_path):
    path = write(tmp_path, HEAD + "matrix:\n  - runtime: tflite\n    models: [lightning]\n"
                 "  - runtime: tflite\n    models: [lightning]\n    precision: [int8]\n"
                 "  - runtime: tf-trt\n    models: [lightning]\n    precision: [fp32, fp16]\n")
    cases = load_suite(path).expand()
    assert [(c.entry, c.variant, c.precision) for c in cases] == [
        (0, "tflite-fp32", "fp32"), (0, "tflite-int8", "int8"), (1, "tflite-int8", "int8"),
        (2, "savedmodel", "fp32"), (2, "savedmodel", "fp16")]


def test_threads_and_affinity_expand_in_order(tmp_path):
    path = write(tmp_path, HEAD + "matrix:\n  - runtime: synthetic\n    threads: [1, null]\n"
                 "    affinity: [null, [1, 0]]\n")
    cases = load_suite(path).expand()
    assert [(c.threads, c.affinity) for c in cases] == [
        (1, None), (1, (0, 1)), (None, None), (None, (0, 1))]


def test_inconsistent_durations_refused(tmp_path):
    path = write(tmp_path, HEAD + "settings: {min_duration_s: 20, max_duration_s: 10}\n"
                 "matrix:\n  - runtime: synthetic\n    settings: {case_timeout_s: 5, "
                 "min_duration_s: 1}\n")
    assert problems_of(path) == [
        "%s: settings: max_duration_s (10) is below min_duration_s (20)" % path,
        "%s: matrix[0].settings: case_timeout_s (5) must exceed max_duration_s (10): the agent "
        "would kill a case that is still measuring" % path]


def test_yaml_traps_in_suites(tmp_path):
    path = write(tmp_path, HEAD + "settings: {max_duration_s: 1:30}\nmatrix:\n"
                 "  - runtime: synthetic\n    options: {xnnpack: no}\n")
    assert problems_of(path) == ["%s: settings.max_duration_s: Input should be a valid number"
                                 % path]


def test_not_a_mapping_and_missing_fields(tmp_path):
    a = write(tmp_path, "- just a list\n", "a.yaml")
    b = write(tmp_path, "name: t\n", "b.yaml")
    assert problems_of(a) == ["%s: expected a mapping with name:, models: and matrix:" % a]
    assert problems_of(b) == ["%s: models: field required" % b, "%s: matrix: field required" % b]


def test_representative_folder_is_resolved_against_the_suite_and_checked(tmp_path):
    (tmp_path / "calib").mkdir()
    good = tmp_path / "good.yaml"
    good.write_text("name: r\nmodels:\n  - name: l\n    builtin: movenet-tiny\n"
                    "    representative: calib\nmatrix:\n  - runtime: tflite\n")
    assert load_suite(good).models[0].resolved_representative() == str(tmp_path / "calib")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: r\nmodels:\n  - name: l\n    builtin: movenet-tiny\n"
                   "    representative: nope\nmatrix:\n  - runtime: tflite\n")
    with pytest.raises(ConfigError) as err:
        load_suite(bad)
    assert err.value.problems == ["%s: models[0].representative: not a folder: %s (expected .npy "
                                  "samples)" % (bad, tmp_path / "nope")]


# -- runtime options: declared per backend in agent/backends/catalog.py, checked at load --------

def options_suite(tmp_path, options_yaml, runtime="tflite"):
    return write(tmp_path, HEAD + "matrix:\n  - runtime: %s\n    models: [lightning]\n"
                 "    options: %s\n" % (runtime, options_yaml))


@pytest.mark.parametrize("given,message", [
    # YAML 1.1 would read `no` as false; the strict loader keeps it a string, and a string is not
    # a boolean: published numbers must come from the configuration the suite says.
    ("{xnnpack: no}", "matrix[0].options.xnnpack: expected true or false, got the string 'no' "
                      "(write true or false, unquoted)"),
    ("{xnnpack: 'false'}", "matrix[0].options.xnnpack: expected true or false, got the string "
                           "'false' (write true or false, unquoted)"),
    ("{xnnpak: false}", "matrix[0].options.xnnpak: unknown option for tflite (did you mean "
                        "xnnpack?); its options: xnnpack, delegate, delegate_options, "
                        "require_full_delegation"),
    ("{delegate_options: [a]}", "matrix[0].options.delegate_options: expected a mapping, got "
                                "list ['a']"),
])
def test_a_bad_runtime_option_names_the_file_and_field(tmp_path, given, message):
    path = options_suite(tmp_path, given)
    assert problems_of(path) == ["%s: %s" % (path, message)]


def test_option_choices_and_minimums_come_from_the_catalog(tmp_path):
    path = options_suite(tmp_path, "{graph_optimization_level: most}", runtime="onnxruntime")
    path.write_text(path.read_text().replace("models: [lightning]", "models: [lightning]\n"
                                             "    variants: [onnx]"))
    assert problems_of(path) == [
        "%s: matrix[0].options.graph_optimization_level: must be one of disable, basic, "
        "extended, all, got 'most'" % path]
    path = options_suite(tmp_path, "{minimum_segment_size: 0}", runtime="tf-trt")
    assert problems_of(path) == [
        "%s: matrix[0].options.minimum_segment_size: must be at least 1, got 0" % path]


def test_an_option_shared_by_runtimes_of_one_entry_must_fit_each(tmp_path):
    path = options_suite(tmp_path, "{xnnpack: false}", runtime="[tflite, litert]")
    assert problems_of(path) == [
        "%s: matrix[0].options.xnnpack: unknown option for litert; its options: accelerator, "
        "cpu_fallback, dispatch_library, compiler_plugin, require_full_delegation (runtime "
        "litert)" % path]


def test_valid_options_reach_the_case_unchanged(tmp_path):
    suite = load_suite(options_suite(tmp_path, "{xnnpack: false}"))
    assert {c.options["xnnpack"] for c in suite.expand()} == {False}


def test_formats_and_converting_precisions_derive_from_the_catalog(tmp_path):
    entry = "matrix:\n  - runtime: openvino\n    models: [lightning]\n    variants: [onnx]\n"
    suite = load_suite(write(tmp_path, HEAD + entry + "    precision: [fp16, int8]\n"))
    # openvino builds at fp32 or fp16 from any model; int8 is not one of its precisions
    assert [(c.backend, c.variant, c.precision) for c in suite.expand()] == [
        ("openvino", "onnx", "fp16")]
    path = write(tmp_path, HEAD + entry + "    precision: [int8]\n", name="bad.yaml")
    assert problems_of(path) == [
        "%s: matrix[0].precision: openvino builds at fp32, fp16, not int8" % path]
