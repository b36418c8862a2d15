"""op_profile: TFLite benchmark_model's per-operator tables, parsed (agent/opprofile.py).

The fixtures in tests/fixtures/benchmark_model/ hold output in the layout TensorFlow's
StatsCalculator prints (tensorflow/core/util/stats_calculator.cc; xla/tsl/util/ after the move),
under profiling_listener.cc's "Operator-wise Profiling Info for Regular Benchmark Runs:":
  current.txt                  no [start] column, 40-wide [node type], INFO: log prefixes,
                               XNNPACK operator types with blanks and commas, an init section
  legacy_start_column.txt      the [start] column and 24-wide types of earlier releases, no
                               log prefix, a type wider than its field
  subgraphs_expanded_tabs.txt  "Primary graph profile:" + "Subgraph (index: 1) profile:"
                               blocks, captured through a terminal (every tab expanded)
No benchmark_model binary is needed: a fake one (a script on PATH) prints a fixture.
"""

import json
import os
import random
import stat
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from fixtures_models import tiny_models  # noqa: E402,F401 - a fixture

from agent_helpers import (FAST_SETTINGS, make_job, reasons_besides_noise,  # noqa: E402
                           run_agent, synthetic_case)

from agent import fsutil, opprofile, schema  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "fixtures", "benchmark_model")


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


# ---------------------------------------------------------------- parsing the fixtures

def test_current_format_run_order_summary_and_top_exactly():
    r = opprofile.parse(fixture("current.txt"))
    assert r["problems"] == []
    assert r["columns"] == ["node type", "first", "avg ms", "%", "cdf%", "mem kb",
                            "times called", "name"]
    assert r["ops_total"] == 8 and not r["ops_truncated"] and r["nodes"] == 8
    assert [o["type"] for o in r["ops"]] == [
        "Convolution (NHWC, F32) IGEMM", "Convolution (NHWC, F32) DWConv",
        "Convolution (NHWC, F32) GEMM", "Max Pooling (NHWC, F32)",
        "Fully Connected (NC, F32) GEMM", "Add (ND, F32)", "Softmax (NC, F32)", "RESHAPE"]
    assert r["ops"][1] == {"type": "Convolution (NHWC, F32) DWConv",
                           "name": "Delegate/Convolution (NHWC, F32) DWConv:1",
                           "avg_ms": 0.187, "percent": 6.188, "cdf_percent": 12.773,
                           "first_ms": 0.221, "times_called": 2, "mem_kb": 0.0}
    fc = r["ops"][4]
    assert (fc["avg_ms"], fc["percent"], fc["cdf_percent"], fc["first_ms"]) == \
        (4.873, 80.524, 99.107, 5.12)
    assert r["ops"][7]["name"] == "[model/flatten/Reshape]:12"
    # the binary's own "Top by Computation Time" order (avg ms per call)
    assert [(t["type"], t["avg_ms"], t["percent"]) for t in r["top"]] == [
        ("Fully Connected (NC, F32) GEMM", 4.873, 80.524),
        ("Convolution (NHWC, F32) IGEMM", 0.399, 6.585),
        ("Convolution (NHWC, F32) GEMM", 0.296, 4.892)]
    assert len(r["by_type"]) == 8
    assert r["by_type"][0] == {"type": "Fully Connected (NC, F32) GEMM", "count": 1,
                               "avg_ms": 4.873, "percent": 80.839, "cdf_percent": 80.839,
                               "mem_kb": 0.0, "times_called": 1}
    dw = next(t for t in r["by_type"] if t["type"] == "Convolution (NHWC, F32) DWConv")
    assert (dw["avg_ms"], dw["times_called"], dw["percent"]) == (0.374, 2, 6.204)
    assert r["by_type"][-1]["cdf_percent"] == 100.0
    assert r["total_ms"] == 6.0516 and r["runs"] == 50 and r["inference_avg_ms"] == 6.0516
    assert r["other_blocks"] == []
    # the init section's tables (ModifyGraphWithDelegate, AllocateTensors) are not operators
    assert not [o for o in r["ops"] + r["by_type"] if o["type"] == "AllocateTensors"]
    json.dumps(r, allow_nan=False)


def test_legacy_format_with_the_start_column_exactly():
    r = opprofile.parse(fixture("legacy_start_column.txt"))
    assert r["problems"] == []
    assert r["columns"][:3] == ["node type", "start", "first"]
    assert len(r["ops"]) == 6 and r["nodes"] == 6
    first = r["ops"][0]
    assert first == {"type": "TfLiteXNNPackDelegate",
                     "name": "[BoxPredictor_0/BoxEncodingPredictor/BiasAdd, BoxPredictor_0/"
                             "ClassPredictor/BiasAdd, BoxPredictor_1/BoxEncodingPredictor/"
                             "BiasAdd]:110",
                     "avg_ms": 28.651, "percent": 92.241, "cdf_percent": 92.241,
                     "first_ms": 31.204, "times_called": 1, "mem_kb": 0.0, "start_ms": 0.019}
    post = r["ops"][5]  # a type wider than its 24-character field: no blank before it
    assert (post["type"], post["start_ms"], post["avg_ms"], post["percent"]) == \
        ("TFLite_Detection_PostProcess", 29.139, 1.912, 6.156)
    assert post["name"].endswith("TFLite_Detection_PostProcess:3]:99")
    assert [t["type"] for t in r["top"]] == ["TfLiteXNNPackDelegate",
                                             "TFLite_Detection_PostProcess", "LOGISTIC"]
    reshape = next(t for t in r["by_type"] if t["type"] == "RESHAPE")
    assert (reshape["count"], reshape["avg_ms"], reshape["times_called"],
            reshape["cdf_percent"]) == (2, 0.014, 2, 100.0)
    assert r["total_ms"] == 31.0612 and r["inference_avg_ms"] == 31.0612


def test_subgraphs_and_expanded_tabs_take_the_primary_graph_and_summarize_the_others():
    r = opprofile.parse(fixture("subgraphs_expanded_tabs.txt"))
    assert r["problems"] == []
    assert [o["type"] for o in r["ops"]] == ["Convolution (NHWC, QC8) IGEMM",
                                             "Global Average Pooling (NWC, QS8)", "WHILE",
                                             "DEQUANTIZE"]
    assert r["ops"][1]["name"] == "Delegate/Global Average Pooling (NWC, QS8):1"
    assert (r["top"][0]["type"], r["top"][0]["percent"]) == ("WHILE", 63.678)
    assert r["total_ms"] == 4.13046 and len(r["by_type"]) == 4
    (body,) = r["other_blocks"]
    assert body["label"] == "Subgraph (index: 1)" and body["ops_total"] == 4
    assert body["total_ms"] == 0.67038
    assert [(t["type"], t["times_called"], t["percent"]) for t in body["top"]] == [
        ("FULLY_CONNECTED", 8, 69.644), ("TANH", 8, 19.595), ("ADD", 8, 7.089)]


# ---------------------------------------------------------------- untrusted output

@pytest.mark.parametrize("seed", range(6))
def test_garbage_never_raises_and_says_what_is_missing(seed):
    rng = random.Random(seed)
    junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20000)))
    for text in (junk.decode("latin-1"), junk.decode("utf-8", "replace"), "", "\x00" * 50):
        r = opprofile.parse(text)
        assert r["ops"] == [] and r["top"] == [] and r["problems"]
        json.dumps(r, allow_nan=False)
    assert opprofile.parse(None)["ops"] == [] and opprofile.parse(b"\xff\x00")["ops"] == []


def test_garbage_spliced_into_the_tables_is_skipped_and_said():
    text = fixture("current.txt")
    lines = text.split("\n")
    at = next(i for i, l in enumerate(lines) if "Max Pooling" in l)
    lines.insert(at, "\tCONV_2D\tnot-a-number\t1.0\t2%\tx%\t0\t1\tbad")
    lines.insert(at, "\x1b[31m\x07 ERROR: something \x00 odd")
    nan_row = lines[at + 2].replace("  0.917%", "  -nan%")
    lines[at + 2] = nan_row
    r = opprofile.parse("\n".join(lines))
    assert len(r["ops"]) == 8  # the real rows, the NaN one included
    assert r["ops"][3]["type"] == "Max Pooling (NHWC, F32)" and r["ops"][3]["percent"] is None
    assert len([p for p in r["problems"] if p.startswith("Run Order: row not understood")]) == 2
    json.dumps(r, allow_nan=False)


def test_truncated_output_keeps_the_rows_it_has_and_computes_top_and_total():
    text = fixture("current.txt")
    cut = text.index("Max Pooling (NHWC, F32)\t") + 12   # inside the 4th row of the Run Order
    r = opprofile.parse(text[:cut])
    assert [o["type"] for o in r["ops"]] == ["Convolution (NHWC, F32) IGEMM",
                                             "Convolution (NHWC, F32) DWConv",
                                             "Convolution (NHWC, F32) GEMM"]
    assert r["by_type"] == [] and r["runs"] is None
    assert [t["type"] for t in r["top"]] == ["Convolution (NHWC, F32) IGEMM",
                                             "Convolution (NHWC, F32) GEMM",
                                             "Convolution (NHWC, F32) DWConv"]  # by avg_ms
    assert r["total_ms"] == round(0.399 + 0.187 * 2 + 0.296, 6)
    assert any("row not understood" in p for p in r["problems"])
    before = opprofile.parse(text[:text.index(opprofile.REGULAR)])
    assert before["ops"] == [] and "was --enable_op_profiling=true honoured?" in \
        before["problems"][0]


def test_rows_past_the_cap_are_counted_not_kept():
    r = opprofile.parse(fixture("current.txt"), max_ops=3)
    assert len(r["ops"]) == 3 and r["ops_total"] == 8 and r["ops_truncated"]
    assert r["top"][0]["type"] == "Fully Connected (NC, F32) GEMM"  # from its own table


def test_older_inference_summary_and_a_version_line_are_read():
    text = ("TF Lite version: 2.1.0\nAverage inference timings in us: Warmup: 83235, "
            "Init: 38467, Inference: 79760.9\n")
    r = opprofile.parse(text)
    assert r["inference_avg_ms"] == 79.7609 and r["version"] == "2.1.0"


# ---------------------------------------------------------------- the command line

def tflite_case(path, case_id="c-tfl-prof", threads=1, backend="tflite", **options):
    settings = dict(FAST_SETTINGS, op_profile=True)
    return {"case_id": case_id, "label": "movenet-tiny/tflite-fp32 %s t%s" % (backend, threads),
            "model": {"name": "movenet-tiny", "variant": "tflite-fp32", "format": "tflite",
                      "sha256": None, "path": path, "synthetic_ms": None},
            "runtime": {"backend": backend, "threads": threads, "affinity": None,
                        "precision": "fp32", "options": options},
            "settings": settings}


def test_command_matches_the_case_threads_xnnpack_and_delegates():
    flags, notes = opprofile.runtime_flags(tflite_case("m.tflite", threads=2, xnnpack=False))
    assert notes == []
    assert opprofile.command("/bin/bm", "/m.tflite", **flags) == [
        "/bin/bm", "--graph=/m.tflite", "--enable_op_profiling=true", "--warmup_runs=10",
        "--num_runs=50", "--num_threads=2", "--use_xnnpack=false"]
    flags, _ = opprofile.runtime_flags(tflite_case("m.tflite", threads=None))
    assert opprofile.command("bm", "m", max_secs=30, **flags)[-2:] == ["--use_xnnpack=true",
                                                                       "--max_secs=30"]
    flags, notes = opprofile.runtime_flags(tflite_case(
        "m.tflite", delegate="/usr/lib/libarmnnDelegate.so",
        delegate_options={"backends": "CpuAcc", "tuning": True, "file": "/a:b"}))
    argv = opprofile.command("bm", "m", **flags)
    assert "--external_delegate_path=/usr/lib/libarmnnDelegate.so" in argv
    assert "--external_delegate_options=backends:CpuAcc;tuning:true" in argv
    assert "delegate option(s) file not passed" in notes[0]
    flags, notes = opprofile.runtime_flags(tflite_case("m.tflite", backend="edgetpu",
                                                       device="usb"))
    argv = opprofile.command("bm", "m", **flags)
    assert argv[6:] == ["--external_delegate_path=libedgetpu.so.1",
                        "--external_delegate_options=device:usb",
                        "--use_xnnpack=true"]  # the case's delegate first, as the Interpreter
    assert "Edge TPU" in notes[0]
    flags, _ = opprofile.runtime_flags(tflite_case("m.tflite", backend="litert",
                                                   accelerator="gpu"))
    assert "--use_gpu=true" in opprofile.command("bm", "m", **flags)
    assert opprofile.runtime_flags(tflite_case("m.tflite", backend="litert",
                                               accelerator="npu"))[0] is None
    flags, why = opprofile.runtime_flags(synthetic_case("c-syn"))
    assert flags is None and "takes .tflite models" in why


# ---------------------------------------------------------------- finding the binary

def executable(path, text="#!/bin/sh\nexit 0\n"):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def test_find_prefers_the_inventory_path_and_never_falls_back_from_a_wrong_one(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    on_path = executable(bin_dir / "linux_aarch64_benchmark_model")
    assert opprofile.find_benchmark_model({}, path=str(bin_dir)) == (on_path, "PATH", None)
    given = executable(tmp_path / "bm")
    job = {"tools": {"benchmark_model": given}}
    assert opprofile.find_benchmark_model(job, path=str(bin_dir)) == \
        (given, "tools.benchmark_model", None)
    missing = {"tools": {"benchmark_model": str(tmp_path / "nope")}}
    found, source, why = opprofile.find_benchmark_model(missing, path=str(bin_dir))
    assert found is None and why == "tools.benchmark_model %s not found" % (tmp_path / "nope")
    plain = tmp_path / "plain"
    plain.write_text("x")
    found, _, why = opprofile.find_benchmark_model({"tools": {"benchmark_model": str(plain)}})
    assert found is None and "not executable" in why
    empty = tmp_path / "empty"
    empty.mkdir()
    if not any(__import__("glob").glob(p) for p in opprofile.KNOWN_LOCATIONS):
        assert opprofile.find_benchmark_model({}, path=str(empty)) == \
            (None, None, "benchmark_model not found")


def test_run_without_a_binary_is_unavailable_with_the_hint_and_non_tflite_not_applicable(
        tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    if any(__import__("glob").glob(p) for p in opprofile.KNOWN_LOCATIONS):
        pytest.skip("a benchmark_model is installed here")
    record, files = opprofile.run({}, tflite_case("m.tflite"), "m.tflite", str(tmp_path),
                                  path=str(empty))
    assert files == {} and record["status"] == "unavailable"
    assert record["reason"] == "benchmark_model not found"
    assert "benchmark_model: PATH" in record["hint"] and "bazel build" in record["hint"]
    assert "ai.google.dev/edge/litert/models/measurement" in record["hint"]
    record, _ = opprofile.run({}, synthetic_case("c-syn"), None, str(tmp_path))
    assert record["status"] == "not applicable"


# ---------------------------------------------------------------- running it

def test_a_failing_binary_is_a_failed_record_with_its_error_line(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    bm = executable(tmp_path / "benchmark_model",
                    "#!/bin/sh\necho 'INFO: STARTING!'\n"
                    "echo 'ERROR: Failed to apply XNNPACK delegate.' >&2\nexit 1\n")
    record, files = opprofile.run({"tools": {"benchmark_model": bm}}, tflite_case(str(model)),
                                  str(model), str(tmp_path))
    assert record["status"] == "failed" and record["exit_code"] == 1
    assert record["reason"] == ("benchmark_model exited with code 1: "
                                "ERROR: Failed to apply XNNPACK delegate.")
    with open(files["op_profile.txt"]) as f:
        assert "Failed to apply" in f.read()
    ok = executable(tmp_path / "bm_ok", "#!/bin/sh\necho 'no tables here'\n")
    record, _ = opprofile.run({"tools": {"benchmark_model": ok}}, tflite_case(str(model)),
                              str(model), str(tmp_path))
    assert record["status"] == "failed" and record["reason"].startswith(
        "no per-operator table in benchmark_model's output")
    record, _ = opprofile.run({"tools": {"benchmark_model": ok}}, tflite_case(str(model)),
                              str(model), str(tmp_path), timeout_s=3.0)
    assert record["status"] == "skipped" and "case_timeout_s" in record["reason"]


def _gone(pid, within=5.0):
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (IOError, OSError):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_a_hung_binary_is_killed_with_its_process_group_at_the_timeout(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = executable(tmp_path / "hang", "#!/bin/sh\nsleep 60 &\necho $! > %s\n"
                        "echo partial output\nwait\n" % pid_file)
    start = time.monotonic()
    rc, data, timed_out, truncated, seconds = opprofile.run_capped([script], 1.0)
    assert timed_out and not truncated and rc == -9 and time.monotonic() - start < 10
    assert data == b"partial output\n"
    assert _gone(int(pid_file.read_text()))  # the grandchild went with the group


def test_endless_output_is_cut_at_the_cap_and_the_binary_stopped(tmp_path):
    script = executable(tmp_path / "spew", "#!/bin/sh\nexec yes 0123456789abcdef\n")
    rc, data, timed_out, truncated, seconds = opprofile.run_capped([script], 30.0,
                                                                   max_bytes=200000)
    assert truncated and not timed_out and len(data) == 200000 and seconds < 10
    assert rc is not None and rc != 0


def test_time_left_keeps_the_reserve_under_case_timeout():
    case = {"settings": {"case_timeout_s": 100.0}}
    assert opprofile.time_left(case, 0.0, clock=lambda: 30.0) == 100.0 - 30.0 - \
        opprofile.RESERVE_S
    assert opprofile.time_left({"settings": {"case_timeout_s": 86400.0}}, 0.0,
                               clock=lambda: 1.0) == opprofile.TIMEOUT_S


def test_kept_files_respect_the_case_caps(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    raw = tmp_path / "raw.txt"
    raw.write_text("x" * 1000)
    env = {"artifacts": {"profile.json": "c1.profile.json"}}
    (out / "c1.profile.json").write_text("y" * 500)
    monkeypatch.setattr(schema, "MAX_KEPT_BYTES", 1200)
    opprofile.keep_files({"op_profile.txt": str(raw)}, str(out), "c1", env)
    assert "op_profile.txt" not in env["artifacts"]
    assert "a case keeps at most 1200 bytes" in env["artifacts_refused"]["op_profile.txt"]
    monkeypatch.setattr(schema, "MAX_KEPT_BYTES", 16 * 1024 * 1024)
    env = {"artifacts": dict(("f%d" % i, "c1.f%d" % i) for i in range(schema.MAX_KEPT_FILES))}
    opprofile.keep_files({"op_profile.txt": str(raw)}, str(out), "c1", env)
    assert env["artifacts_refused"]["op_profile.txt"].startswith("a case keeps at most")
    env = {}
    opprofile.keep_files({"op_profile.txt": str(raw)}, str(out), "c1", env)
    assert env["artifacts"] == {"op_profile.txt": "c1.op_profile.txt"}
    assert (out / "c1.op_profile.txt").read_text() == "x" * 1000


# ---------------------------------------------------------------- through the agent

FAKE_BM = '''#!%(python)s
"""A fake TFLite benchmark_model: checks its argv as the real one needs it, prints a fixture."""
import json, os, sys
args = sys.argv[1:]
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "argv.json"), "w") as f:
    json.dump(args, f)
graph = [a[len("--graph="):] for a in args if a.startswith("--graph=")]
if "--enable_op_profiling=true" not in args or not graph:
    sys.stderr.write("ERROR: fake benchmark_model: --graph= and --enable_op_profiling=true "
                     "are required, got %%r\\n" %% (args,))
    sys.exit(2)
if not os.path.isfile(graph[0]):
    sys.stderr.write("ERROR: Could not open '%%s'.\\n" %% graph[0])
    sys.exit(1)
with open(%(fixture)r) as f:
    text = f.read()
at = text.index("INFO: Profiling Info for Benchmark Initialization")
sys.stdout.write(text[:at])
sys.stdout.flush()
sys.stderr.write(text[at:])   # TFLite's profiler tables come through its log, on stderr
'''


def fake_benchmark_model(folder, name="benchmark_model", fixture_name="current.txt"):
    folder.mkdir(exist_ok=True)
    return executable(folder / name, FAKE_BM % {"python": sys.executable,
                                                "fixture": os.path.join(FIXTURES, fixture_name)})


def test_fake_binary_refuses_a_command_without_profiling_or_graph(tmp_path):
    bm = fake_benchmark_model(tmp_path / "bin")
    rc, data, _, _, _ = opprofile.run_capped([bm, "--num_runs=5"], 30)
    assert rc == 2 and b"--enable_op_profiling=true are required" in data


def test_tflite_case_with_op_profile_gets_the_operator_table_and_keeps_the_raw_output(
        workdir, tmp_path, tiny_models):
    model = str(tiny_models["tflite-fp32"].local_path)
    bin_dir = tmp_path / "bin"
    fake_benchmark_model(bin_dir, "linux_x86-64_benchmark_model")   # a prebuilt's name
    job_path, out = workdir(make_job([tflite_case(model)]))
    proc = run_agent(["run", job_path, "--out", out], extra_env={"PATH": str(bin_dir)})
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    doc = fsutil.read_json(os.path.join(out, "c-tfl-prof.json"))
    assert schema.check_result(doc) == []
    assert doc["status"] == "ok" and reasons_besides_noise(doc) == []
    record = doc["environment"]["op_profile"]
    assert record["status"] == "ok", record
    assert record["binary"] == str(bin_dir / "linux_x86-64_benchmark_model")
    assert record["binary_from"] == "PATH" and record["exit_code"] == 0
    assert [(t["type"], t["percent"]) for t in record["top"]] == [
        ("Fully Connected (NC, F32) GEMM", 80.524), ("Convolution (NHWC, F32) IGEMM", 6.585),
        ("Convolution (NHWC, F32) GEMM", 4.892)]
    assert len(record["ops"]) == 8 and len(record["by_type"]) == 8
    assert record["total_ms"] == 6.0516 and record["problems"] == []
    with open(str(bin_dir / "argv.json")) as f:
        argv = json.load(f)
    assert argv == record["command"][1:]
    assert "--graph=%s" % model in argv and "--num_threads=1" in argv
    assert "--use_xnnpack=true" in argv and "--enable_op_profiling=true" in argv
    # the raw output beside the result, listed with the kept files
    assert doc["environment"]["artifacts"]["op_profile.txt"] == "c-tfl-prof.op_profile.txt"
    assert record["raw"] == "c-tfl-prof.op_profile.txt"
    with open(os.path.join(out, "c-tfl-prof.op_profile.txt")) as f:
        assert f.read() == fixture("current.txt")
    # measured as without a profile: the timing is the case's, the profile apart
    assert doc["timing"]["runs"] >= FAST_SETTINGS["runs"]


def test_without_a_binary_the_case_still_measures_and_says_how_to_get_one(workdir, tmp_path,
                                                                           tiny_models):
    if any(__import__("glob").glob(p) for p in opprofile.KNOWN_LOCATIONS):
        pytest.skip("a benchmark_model is installed here")
    model = str(tiny_models["tflite-fp32"].local_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    syn = synthetic_case("c-syn-prof", op_profile=True)
    job_path, out = workdir(make_job([tflite_case(model), syn]))
    proc = run_agent(["run", job_path, "--out", out], extra_env={"PATH": str(empty)})
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    doc = fsutil.read_json(os.path.join(out, "c-tfl-prof.json"))
    assert schema.check_result(doc) == []
    assert doc["status"] == "ok" and doc["validity"]["status"] in ("VALID", "INVALID")
    assert reasons_besides_noise(doc) == []
    record = doc["environment"]["op_profile"]
    assert record["status"] == "unavailable" and record["reason"] == "benchmark_model not found"
    assert record["hint"] == opprofile.HINT
    assert "op_profile.txt" not in (doc["environment"].get("artifacts") or {})
    assert not os.path.exists(os.path.join(out, "c-tfl-prof.op_profile.txt"))
    other = fsutil.read_json(os.path.join(out, "c-syn-prof.json"))
    assert other["status"] == "ok"
    assert other["environment"]["op_profile"]["status"] == "not applicable"
