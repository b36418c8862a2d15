"""A hostile device for tests: an 'agent' that writes chosen bytes into its out folder.

It is uploaded and started by the real executor exactly as the real agent is (same argv, same
detached start, same polling): only what it writes is chosen by the test. Results measured
correctly come from tests/golden/result-ok1.json, retargeted to the job's case.
"""

import hashlib
import json
import os

GOLDEN_OK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "result-ok1.json")

SCRIPT = r'''
import base64, json, os, sys, time
files = json.loads(base64.b64decode(%(files)r).decode())
out = sys.argv[sys.argv.index("--out") + 1]
os.makedirs(out, exist_ok=True)
for name, text in files:
    if name == "@sleep":
        time.sleep(float(base64.b64decode(text)))
        continue
    path = os.path.join(out, name.lstrip("+"))
    if name.startswith("+"):
        with open(path, "ab") as f:
            f.write(base64.b64decode(text))
        continue
    with open(path + ".tmp", "wb") as f:  # whole files appear at once, as the agent's do
        f.write(base64.b64decode(text))
    os.rename(path + ".tmp", path)
sys.exit(%(exit_code)d)
'''


def ok_result(job, case):
    """A schema-valid 'ok' result for this job's case (the golden one, retargeted)."""
    with open(GOLDEN_OK) as f:
        doc = json.load(f)
    doc.update(case_id=case["case_id"], nonce=job["nonce"], run_id=job["run_id"],
               label=case["label"], model=dict(case["model"]), runtime=dict(case["runtime"]))
    return doc


def write_agent(folder, files, exit_code=0):
    """(path, sha256) of a hostile agent that writes `files` ([(name, bytes)], in order; a name
    starting with '+' appends; ('@sleep', b'1.5') sleeps) into --out, then exits exit_code."""
    import base64
    encoded = [(name, base64.b64encode(data).decode()) for name, data in files]
    text = SCRIPT % {"files": base64.b64encode(json.dumps(encoded).encode()).decode(),
                     "exit_code": exit_code}
    path = os.path.join(str(folder), "hostile_agent.py")
    with open(path, "w") as f:
        f.write(text)
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    from pathlib import Path
    return Path(path), sha


def result_bytes(doc):
    return json.dumps(doc).encode()


def nested(depth):
    """A JSON document nested `depth` lists deep."""
    return b"[" * depth + b"]" * depth
