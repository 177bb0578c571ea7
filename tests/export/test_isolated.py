"""Exports load where ofa is not importable, and a killed export leaves no half-written directory."""

from __future__ import annotations

import json
import os
import signal
import site
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

import export
from tests.export.conftest import per_layer_subnet, vanilla_subnet
from tests.tiny import BLOCK_PROJECT, main_output, make_inputs

# Runs with `python -I -S`: no user site, no .pth files (so not the editable finder of ofa), no
# cwd on sys.path. Only site-packages is added, and a finder refuses the project's packages in
# case they are installed there non-editable.
_CHILD = BLOCK_PROJECT + textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoModelForSequenceClassification

    inputs = {k: torch.tensor(v) for k, v in json.loads(sys.argv[3]).items()}
    results = {}
    for name, remote in json.loads(sys.argv[2]):
        model = AutoModelForSequenceClassification.from_pretrained(name, trust_remote_code=remote)
        with torch.no_grad():
            results[name] = model.eval()(**inputs).logits.tolist()
    print("RESULT" + json.dumps(results))
    """
)


def test_load_in_a_process_without_ofa(supernet, tmp_path):
    per_layer, vanilla = per_layer_subnet(supernet), vanilla_subnet(supernet)
    remote_dir = export.save(supernet, per_layer, tmp_path / "remote")
    plain_dir = export.save(supernet, vanilla, tmp_path / "plain")
    inputs = make_inputs()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HOME": str(tmp_path),
    }
    dirs = [[str(remote_dir), True], [str(plain_dir), False]]
    completed = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _CHILD, json.dumps(site.getsitepackages()),
         json.dumps(dirs), json.dumps({k: v.tolist() for k, v in inputs.items()})],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    line = next(x for x in completed.stdout.splitlines() if x.startswith("RESULT"))
    results = json.loads(line[len("RESULT") :])
    for directory, subnet in ((remote_dir, per_layer), (plain_dir, vanilla)):
        with torch.no_grad(), supernet.using(subnet):
            expected = main_output(supernet.eval()(**inputs))
        got = torch.tensor(results[str(directory)])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


_KILLED = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    import export
    from tests.export.conftest import make_supernet, per_layer_subnet

    class _Stalls:  # a tokenizer whose save hangs: the export is half written when it is killed
        def __init__(self, flag):
            self.flag = flag

        def save_pretrained(self, directory):
            (Path(directory) / "tokenizer_config.json").write_text("{}")
            Path(self.flag).write_text("inside")
            time.sleep(120)

    def run(target, flag):
        supernet = make_supernet()
        export.save(supernet, per_layer_subnet(supernet), target, tokenizer=_Stalls(flag),
                    overwrite=True)

    # two exports at once, one into a new directory and one over a complete export
    for target, flag in zip(sys.argv[1:3], sys.argv[3:5]):
        threading.Thread(target=run, args=(target, flag), daemon=True).start()
    time.sleep(300)
    """
)


def test_killed_export_leaves_target_absent_or_complete(supernet, tmp_path):
    new, old = tmp_path / "new", export.save(supernet, vanilla_subnet(supernet), tmp_path / "old")
    flags = [tmp_path / "flag-new", tmp_path / "flag-old"]
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED, str(new), str(old), *map(str, flags)],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        deadline = time.monotonic() + 200
        while not all(flag.exists() for flag in flags):
            assert process.poll() is None, "the export process died before it was killed"
            assert time.monotonic() < deadline, "the exports never reached the tokenizer"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not new.exists()
    export.load(old)  # complete: every file's sha256 checks out
    assert export.read_manifest(old)["subnet"]["layers"] == list(vanilla_subnet(supernet).layers)
    assert not (old / "tokenizer_config.json").exists()
