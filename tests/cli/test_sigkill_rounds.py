"""The fault suite: real ``ofa`` processes SIGKILLed at random moments, several rounds each.

* train: killed 3 times at random steps (often inside a checkpoint write), resumed each time;
  the checkpoint on disk is always a complete, hash-valid one that never goes back, and the
  final supernet and losses equal an uninterrupted run's.
* search, journal file and SQLite: killed 3 times at random points of the study's writes, rerun
  with the same study; no complete trial lost, changed or numbered twice, at most one trial in
  flight per kill and it ends FAIL; a stale journal lock is taken over in seconds.
* two workers on one journal: one killed at a random trial, the other finishes; no trial
  duplicated, the killed worker's trial in flight ends FAIL.
* export: killed at random moments of the write and of the verify, over a new and over an
  earlier export; the target is always absent or a complete export that loads and verifies;
  the next export cleans the leftovers.

The moments are drawn from ``OFA_FAULT_SEED`` (printed in every failure); see tests/cli/_kill.py.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
import time
from pathlib import Path

import optuna
import pytest
import safetensors.torch
import torch
from optuna.trial import TrialState

import export
import ofa
from ofa_app.cli import main
from tests.cli._kill import TAG, finish, kill_at, leftovers, rng, run_ofa, start_ofa

try:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from ofa.embedded import minilm_path

    TOKENIZER = BertTokenizerFast.from_pretrained(minilm_path())
except (FileNotFoundError, OSError) as error:
    pytest.skip(
        f"the embedded MiniLM tokenizer is not installed ({error})", allow_module_level=True
    )

TIMEOUT = 180  # seconds any one `ofa` process may take before the test calls it hung
ROUNDS = 3


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A tiny teacher, its supernet, a review CSV and a latency model of the supernet."""
    directory = tmp_path_factory.mktemp("sigkill")
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=TOKENIZER.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(directory / "teacher")
    TOKENIZER.save_pretrained(directory / "teacher")
    with open(directory / "reviews.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows((f"film {i} was {'good' if i % 2 else 'bad'}", i % 2) for i in range(64))
    teacher, supernet = str(directory / "teacher"), str(directory / "supernet")
    try:
        assert main(["convert", "--model", teacher, "--out", supernet, "--importance", "l1"]) == 0
        assert (
            main(
                ["profile", "--supernet", supernet, "--out", str(directory / "latency.json"),
                 "--batch-size", "1", "--seq-len", "16", "--threads", "1", "--subnets", "5",
                 "--held-out", "2", "--warmup", "1", "--rounds", "2"]
            )  # fmt: skip
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    return directory


# train -----------------------------------------------------------------------------------------

STEPS = 24


def _train_argv(files: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--supernet", str(files / "supernet"), "--teacher", str(files / "teacher"),
        "--out", str(out), "--data", str(files / "reviews.csv"), "--steps", str(STEPS),
        "--checkpoint-every", "1", "--batch-size", "8", "--max-length", "16", "--threads", "1",
        "--seed", "3", *extra,
    ]  # fmt: skip


def _rows(out: Path) -> list[dict]:
    """The complete rows of ``metrics.jsonl`` (a line still being written is left out)."""
    try:
        text = (out / "metrics.jsonl").read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def _losses(out: Path) -> dict[int, list[float]]:
    losses: dict[int, list[float]] = {}
    for row in _rows(out):
        if "loss" in row:
            losses.setdefault(row["step"], []).append(row["loss"])
    return losses


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _checkpoint_step(directory: Path, where: str) -> int:
    """The step of a checkpoint after checking every file against its sha256 and reading it."""
    meta = json.loads((directory / "state.json").read_text())
    assert set(meta["sha256"]) >= {"model.safetensors", "optimizer.safetensors"}, where
    for name, digest in meta["sha256"].items():
        data = (directory / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, f"{where}: {name} is half-written"
        safetensors.torch.load(data)
    return int(meta["step"])


_TRAIN_TEMPORARIES = (".checkpoint.", ".supernet.", "metrics.tmp")


def test_train_killed_at_random_steps_resumes_exactly(files, tmp_path):
    random = rng("train")
    straight = tmp_path / "straight"
    run_ofa(_train_argv(files, straight), timeout=TIMEOUT, log=tmp_path / "straight.log",
            what="uninterrupted train")  # fmt: skip
    reference = _losses(straight)
    assert sorted(reference) == list(range(1, STEPS + 1))

    out, saved, history = tmp_path / "killed", 0, []
    for round_ in range(ROUNDS):
        resume = (out / "checkpoint").is_dir()
        target = random.randint(saved + 1, STEPS)  # kill once this step is logged, then later
        delay = random.uniform(0.0, 0.15)
        before = _inode(out / "metrics.jsonl")  # a run rewrites metrics.jsonl before its steps

        def reached(_process, target=target, before=before) -> bool:
            rows = _rows(out)
            return _inode(out / "metrics.jsonl") != before and any(
                row["step"] >= target for row in rows
            )

        outcome = kill_at(
            _train_argv(files, out, *(("--resume",) if resume else ())),
            mark=reached, delay=delay, timeout=TIMEOUT, log=tmp_path / f"train{round_}.log",
            what=f"train round {round_}",
        )  # fmt: skip
        where = (
            f"{TAG} train round {round_} ({'resumed' if resume else 'fresh'}, step >= {target}, "
            f"{outcome.describe()}; before: {history})"
        )
        checkpoint = out / "checkpoint"
        if checkpoint.exists():
            step = _checkpoint_step(checkpoint, where)
        else:
            step = 0
        assert step >= saved, f"{where}: the checkpoint went back from step {saved} to {step}"
        logged = max((row["step"] for row in _rows(out)), default=0)
        # a checkpoint every step: at most the step in flight is lost
        assert step >= logged - 1, f"{where}: step {logged} logged, checkpoint at {step}"
        if (out / "supernet").exists():
            assert step == STEPS, f"{where}: a final supernet before the last step"
            ofa.load_supernet(out / "supernet")  # complete: hash-checked
        stray = [
            name
            for name in leftovers(out)
            if not name.startswith(_TRAIN_TEMPORARIES) or not name.endswith((".tmp", ".old"))
            and ".old-" not in name
        ]
        assert not stray, f"{where}: unexpected files {stray}"
        saved = step
        history.append((target, round(delay, 3), outcome.killed, step))

    resume = ("--resume",) if (out / "checkpoint").is_dir() else ()
    run_ofa(_train_argv(files, out, *resume), timeout=TIMEOUT, log=tmp_path / "final.log",
            what="train after the kills")  # fmt: skip
    where = f"{TAG} train rounds {history}"
    losses = _losses(out)
    assert sorted(losses) == list(range(1, STEPS + 1)), f"{where}: steps {sorted(losses)}"
    assert all(len(v) == 1 for v in losses.values()), f"{where}: a step logged twice"
    for step_, (loss,) in losses.items():
        assert loss == pytest.approx(reference[step_][0], abs=1e-6), f"{where}: step {step_}"
    weights = safetensors.torch.load_file(out / "supernet" / "model.safetensors")
    expected = safetensors.torch.load_file(straight / "supernet" / "model.safetensors")
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, atol=1e-6, rtol=0, msg=where)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "metrics.jsonl", "supernet"], (
        f"{where}: leftovers {leftovers(out)}"
    )
    assert _checkpoint_step(out / "checkpoint", where) == STEPS


# search ----------------------------------------------------------------------------------------

TRIALS = 12  # per run


def _search_argv(files: Path, storage: str, out: Path, *, trials: int = TRIALS, seed: int = 0):
    return [
        "search", "--supernet", str(files / "supernet"),
        "--latency-model", str(files / "latency.json"), "--data", str(files / "reviews.csv"),
        "--examples", "16", "--max-length", "16", "--budget-ms", "1e5", "--trials", str(trials),
        "--storage", storage, "--study-name", "faults", "--no-remeasure", "--out", str(out),
        "--threads", "1", "--seed", str(seed),
    ]  # fmt: skip


class _Study:
    """Reads the study of a journal file or an SQLite file, and how far its writes got."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.path = directory / ("study.journal" if kind == "journal" else "study.db")
        self.storage = str(self.path) if kind == "journal" else f"sqlite:///{self.path}"

    def progress(self) -> int:
        """Journal lines, or rows of the trial tables: grows with every write."""
        if self.kind == "journal":
            try:
                return self.path.read_bytes().count(b"\n")
            except FileNotFoundError:
                return 0
        if not self.path.exists():
            return 0
        try:
            with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=0.05) as db:
                return int(
                    db.execute(
                        "SELECT (SELECT COUNT(*) FROM trials) + (SELECT COUNT(*) FROM trial_params)"
                        " + (SELECT COUNT(*) FROM trial_user_attributes)"
                        " + (SELECT COUNT(*) FROM trial_values)"
                    ).fetchone()[0]
                )
        except sqlite3.Error:  # tables not made yet, or locked this instant
            return 0

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        if not self.path.exists():
            return []
        if self.kind == "journal":
            storage = optuna.storages.JournalStorage(
                optuna.storages.journal.JournalFileBackend(str(self.path))
            )
        else:
            storage = optuna.storages.RDBStorage(self.storage)
        try:
            return optuna.load_study(study_name="faults", storage=storage).get_trials()
        except KeyError:  # killed before the study was made
            return []
        finally:
            if isinstance(storage, optuna.storages.RDBStorage):
                storage.engine.dispose()

    def leftovers(self) -> list[str]:
        return sorted(
            p.name for p in self.path.parent.iterdir() if p.name.startswith(self.path.name + ".")
        )


def _key(trial: optuna.trial.FrozenTrial) -> tuple:
    return trial.number, trial.state, trial.params, trial.values


def _worker(trial: optuna.trial.FrozenTrial) -> int | None:
    tag = trial.user_attrs.get("ofa_worker")
    return int(tag["pid"]) if isinstance(tag, dict) else None


def _check_study(trials, earlier, where: str) -> None:
    """Numbers unique and gapless; every trial complete in ``earlier`` still there unchanged;
    every trial that is RUNNING or finished names the worker that ran it."""
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials))), f"{where}: trial numbers {numbers}"
    by_number = {t.number: t for t in trials}
    for old in earlier:
        if old.state == TrialState.COMPLETE:
            assert old.number in by_number, f"{where}: complete trial {old.number} lost"
            assert _key(by_number[old.number]) == _key(old), f"{where}: trial {old.number} changed"
    untagged = [t.number for t in trials if t.state != TrialState.WAITING and _worker(t) is None]
    assert not untagged, f"{where}: trials {untagged} name no worker, so none can fail them"


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_search_killed_at_random_moments_loses_no_trial(files, tmp_path, kind):
    random = rng(f"search-{kind}")
    study = _Study(kind, tmp_path)
    out = tmp_path / "out"
    trials: list[optuna.trial.FrozenTrial] = []
    in_flight: set[int] = set()  # trials RUNNING when their worker was killed
    history = []
    for round_ in range(ROUNDS):
        start = study.progress()
        target = start + random.randint(1, 12 * TRIALS)  # 13 to 15 writes a trial
        delay = random.uniform(0.0, 0.01)
        outcome = kill_at(
            _search_argv(files, study.storage, out),
            mark=lambda _p, target=target: study.progress() >= target,
            delay=delay, timeout=TIMEOUT, log=tmp_path / f"search{round_}.log",
            what=f"search round {round_}", poll=0.001,
        )  # fmt: skip
        where = (
            f"{TAG} {kind} search round {round_} (killed at write {target - start}, "
            f"{outcome.describe()}; before: {history})"
        )
        now = study.trials()
        _check_study(now, trials, where)
        running = [t.number for t in now if t.state == TrialState.RUNNING]
        assert len(running) <= 1, f"{where}: trials {running} in flight in one worker"
        failed = {t.number for t in now if t.state == TrialState.FAIL}
        assert failed <= in_flight, f"{where}: trials {failed - in_flight} failed, not in flight"
        in_flight |= set(running)
        if (out / "pareto.json").exists():
            json.loads((out / "pareto.json").read_text())  # complete, never half-written
        trials = now
        history.append((target - start, round(delay, 4), outcome.killed, len(now), running))

    lock = Path(str(study.path) + ".lock")
    stale = lock.is_symlink()
    inode = lock.lstat().st_ino if stale else None

    def lock_taken_over() -> bool:
        try:
            return lock.lstat().st_ino != inode
        except FileNotFoundError:
            return True

    _, taken_over = run_ofa(
        _search_argv(files, study.storage, out), timeout=TIMEOUT,
        log=tmp_path / "final.log", what=f"{kind} search after the kills",
        watch=lock_taken_over if stale else None,
    )  # fmt: skip
    where = f"{TAG} {kind} search rounds {history}"
    if stale:  # the lock a kill left: taken over after the 5 s grace, not Optuna's 30 s
        assert taken_over is not None and taken_over < 25, f"{where}: lock kept {taken_over} s"
    final = study.trials()
    _check_study(final, trials, where)
    states = {t.number: t.state for t in final}
    assert [n for n, s in states.items() if s in (TrialState.RUNNING, TrialState.WAITING)] == []
    assert {n for n, s in states.items() if s == TrialState.FAIL} == in_flight, where
    complete = sum(s == TrialState.COMPLETE for s in states.values())
    before = sum(t.state == TrialState.COMPLETE for t in trials)
    assert complete == before + TRIALS, f"{where}: {complete} complete after {before}"
    json.loads((out / "pareto.json").read_text())
    assert study.leftovers() == [], f"{where}: {study.leftovers()}"
    assert leftovers(out) == [], f"{where}: {leftovers(out)}"


def test_two_workers_one_killed_at_a_random_trial(files, tmp_path):
    random = rng("two-workers")
    study = _Study("journal", tmp_path)
    trials: list[optuna.trial.FrozenTrial] = []
    in_flight: set[int] = set()
    history = []
    for round_ in range(2):
        steady = start_ofa(
            _search_argv(files, study.storage, tmp_path / "steady", trials=2 * TRIALS,
                         seed=100 + round_),
            log=tmp_path / f"steady{round_}.log",
        )  # fmt: skip
        target = random.randint(1, TRIALS)  # kill once it tagged this many trials, then later
        delay = random.uniform(0.0, 0.03)

        def tagged(process, target=target) -> bool:
            try:
                text = study.path.read_bytes()
            except FileNotFoundError:
                return False
            return text.count(f'"pid":{process.pid},'.encode()) >= target

        try:
            outcome = kill_at(
                _search_argv(files, study.storage, tmp_path / "killed", seed=200 + round_),
                mark=tagged, delay=delay, timeout=TIMEOUT, log=tmp_path / f"killed{round_}.log",
                what=f"killed worker, round {round_}",
            )  # fmt: skip
            steady_alive = steady.poll() is None  # then it fails the dead worker's trial at its end
        finally:
            finish(steady, timeout=TIMEOUT, log=tmp_path / f"steady{round_}.log",
                   what=f"steady worker, round {round_}")  # fmt: skip
        where = (
            f"{TAG} two workers round {round_} (killed after {target} tags, "
            f"{outcome.describe()}, steady worker alive then: {steady_alive}; before: {history})"
        )
        now = study.trials()
        _check_study(now, trials, where)
        new = [t for t in now if t.number >= len(trials)]
        by_pid: dict[int | None, list[optuna.trial.FrozenTrial]] = {}
        for trial in new:
            by_pid.setdefault(_worker(trial), []).append(trial)
        steady_trials = by_pid.pop(steady.pid, [])
        assert len(steady_trials) == 2 * TRIALS, f"{where}: steady worker ran {len(steady_trials)}"
        assert all(t.state == TrialState.COMPLETE for t in steady_trials), where
        killed = by_pid.pop(outcome.pid, [])
        assert not {k: v for k, v in by_pid.items() if v}, f"{where}: trials of no worker"
        unfinished = [t.number for t in killed if t.state != TrialState.COMPLETE]
        assert len(unfinished) <= 1, f"{where}: killed worker left {unfinished}"
        for trial in trials:  # a trial left in flight by the round before is failed by now
            if trial.state == TrialState.RUNNING:
                assert now[trial.number].state == TrialState.FAIL, where
        for trial in killed:
            if trial.state != TrialState.COMPLETE:
                expected = TrialState.FAIL if outcome.killed and steady_alive else None
                if expected is not None:
                    assert trial.state == expected, f"{where}: trial {trial.number} {trial.state}"
                in_flight.add(trial.number)
        trials = now
        history.append((target, round(delay, 3), outcome.killed, len(now), unfinished))
    # the last round's trial in flight, if its steady worker ended first, fails on the next run
    run_ofa(_search_argv(files, study.storage, tmp_path / "steady", trials=1),
            timeout=TIMEOUT, log=tmp_path / "last.log", what="one more worker")  # fmt: skip
    final = study.trials()
    where = f"{TAG} two workers rounds {history}"
    _check_study(final, trials, where)
    assert {t.number for t in final if t.state == TrialState.FAIL} == in_flight, where
    assert not [t.number for t in final if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert study.leftovers() == [], where


# export ----------------------------------------------------------------------------------------


def test_export_killed_at_random_moments_is_absent_or_complete(files, tmp_path):
    random = rng("export")
    supernet = ofa.load_supernet(files / "supernet")
    out = tmp_path / "OUT"

    def export_argv(subnet: str) -> list[str]:
        return ["export", "--supernet", str(files / "supernet"), "--subnet", subnet,
                "--out", str(out), "--overwrite"]  # fmt: skip

    def temporaries() -> list[str]:
        return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".OUT."))

    def check_complete(where: str, allowed: set[str]) -> None:
        manifest = export.read_manifest(out)
        export.load(out)  # every file's sha256 checked first
        subnet = supernet.space.subnet_type.from_dict(manifest["subnet"])
        assert subnet.to_json() in allowed, f"{where}: exported {subnet.to_json()}"
        export.verify(out, supernet, subnet)

    shapes = {"min": supernet.space.min_subnet().to_json(), "max": supernet.space.max_subnet()}
    shapes["max"] = shapes["max"].to_json()
    history, exported = [], None
    for round_ in range(ROUNDS):
        name = ("min", "max")[round_ % 2]
        phase = random.choice(["write", "verify"])
        delay = random.uniform(0.0, 0.3 if phase == "write" else 0.6)
        before = out.stat().st_mtime_ns if out.exists() else None

        def reached(_process, phase=phase, before=before) -> bool:
            if phase == "write":  # its temporary directory exists: files are being written
                return any(p.endswith(".tmp") for p in temporaries())
            try:  # the new export is in place: verify runs
                return out.stat().st_mtime_ns != before
            except FileNotFoundError:
                return False

        outcome = kill_at(
            export_argv(name), mark=reached, delay=delay, timeout=TIMEOUT,
            log=tmp_path / f"export{round_}.log", what=f"export round {round_}",
        )  # fmt: skip
        where = (
            f"{TAG} export round {round_} ({name}, killed {phase}, {outcome.describe()}; "
            f"before: {history})"
        )
        if not outcome.killed:
            assert temporaries() == [], f"{where}: the export left {temporaries()}"
        if out.exists():
            check_complete(where, {shapes[name]} | ({exported} if exported else set()))
            exported = export.read_manifest(out)["subnet"]
            exported = supernet.space.subnet_type.from_dict(exported).to_json()
        else:
            assert exported is None, f"{where}: the earlier complete export is gone"
        history.append((name, phase, round(delay, 3), outcome.killed, temporaries()))

    run_ofa(export_argv("min"), timeout=TIMEOUT, log=tmp_path / "final.log",
            what="export after the kills")  # fmt: skip
    where = f"{TAG} export rounds {history}"
    assert temporaries() == [], f"{where}: leftovers {temporaries()}"
    check_complete(where, {shapes["min"]})
