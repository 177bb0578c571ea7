"""The CLI on a decoder-only causal LM (a tiny random Llama): ofa convert (activation
importance on a .txt) -> train (token blocks) -> profile -> search -> export (stock
LlamaForCausalLM), and the refusals of missing data and BERT-only flags."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

import ofa
from ofa.data_text import train_tokenizer
from ofa_app.cli import main
from tests.ofa.test_decoder_family import make_decoder

SENTENCES = [
    "the film was a quiet delight from start to finish",
    "a tedious plot and wooden acting sink this one",
    "the cast is superb and the score lifts every scene",
    "i left the cinema bored and a little annoyed",
    "her performance carries the story through its slower moments",
    "the jokes land often enough to keep the evening light",
    "a clumsy script wastes a talented group of actors",
    "the camera work is patient and the colours are warm",
    "nothing in the second half matches the promise of the opening",
    "it is a small story told with care and honesty",
] * 6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoder_cli")
    tokenizer = train_tokenizer(SENTENCES, vocab_size=300, min_frequency=1)
    model = make_decoder("llama", vocab_size=len(tokenizer))
    model.save_pretrained(root / "llama")
    tokenizer.save_pretrained(root / "llama")
    (root / "corpus.txt").write_text("\n".join(SENTENCES) + "\n")
    return root


def _run(argv: list[str], capsys) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_convert_train_profile_search_export_a_llama(workspace, capsys):
    root = workspace
    corpus = str(root / "corpus.txt")
    out = _run(
        ["convert", "--model", str(root / "llama"), "--out", str(root / "supernet"),
         "--importance", "activation", "--text-csv", corpus, "--max-length", "16",
         "--batches", "2"],
        capsys,
    )  # fmt: skip
    assert "supernet saved to" in out and "no tokenizer" not in out
    assert ofa.load_supernet(root / "supernet").family_name == "decoder"

    out = _run(
        ["train", "--supernet", str(root / "supernet"), "--teacher", str(root / "llama"),
         "--data", corpus, "--max-length", "16", "--batch-size", "4", "--steps", "6",
         "--lr", "1e-3", "--width-multipliers", "0.5", "--checkpoint-every", "0",
         "--threads", "1", "--out", str(root / "train")],
        capsys,
    )  # fmt: skip
    assert "trained 6 steps" in out
    assert "held-out next-token accuracy, max subnet" in out and "perplexity" in out
    rows = [json.loads(r) for r in (root / "train" / "metrics.jsonl").read_text().splitlines()]
    phases = [r["phase"] for r in rows if "eval" not in r]
    assert phases[0] == "width-large" and phases[-1] == "hidden-all"
    trained = root / "train" / "supernet"
    assert (trained / "tokenizer_config.json").is_file()

    _run(
        ["profile", "--supernet", str(trained), "--out", str(root / "latency.json"),
         "--seq-len", "16", "--subnets", "5", "--held-out", "2", "--rounds", "3",
         "--threads", "1", "--max-error", "100"],
        capsys,
    )  # fmt: skip
    latency = json.loads((root / "latency.json").read_text())
    budget = 2 * max(m["measured_ms"] for m in latency["measurements"])
    out = _run(
        ["search", "--supernet", str(trained), "--latency-model", str(root / "latency.json"),
         "--budget-ms", f"{budget:.4f}", "--trials", "4", "--data", corpus,
         "--max-length", "16", "--examples", "8", "--no-remeasure",  # a busy machine
         "--out", str(root / "search")],
        capsys,
    )  # fmt: skip
    pareto = json.loads((root / "search" / "pareto.json").read_text())
    assert pareto["best"] is not None and 0.0 <= pareto["best"]["accuracy"] <= 1.0

    # a decode budget: ms per generated token with 16 tokens in the KV cache
    out = _run(
        ["profile", "--supernet", str(trained), "--out", str(root / "decode.json"),
         "--phase", "decode", "--seq-len", "16", "--subnets", "5", "--held-out", "2",
         "--rounds", "3", "--threads", "1", "--max-error", "100"],
        capsys,
    )  # fmt: skip
    assert "decode at context 16" in out
    decode = json.loads((root / "decode.json").read_text())
    assert decode["target"]["phase"] == "decode"
    budget = 2 * max(m["measured_ms"] for m in decode["measurements"])
    out = _run(
        ["search", "--supernet", str(trained), "--latency-model", str(root / "decode.json"),
         "--budget-ms", f"{budget:.4f}", "--trials", "3", "--data", corpus,
         "--max-length", "16", "--examples", "8", "--no-remeasure",
         "--out", str(root / "search-decode")],
        capsys,
    )  # fmt: skip
    assert json.loads((root / "search-decode" / "pareto.json").read_text())["best"] is not None
    # both budgets at once: the prefill profile's and the decode one's
    prefill_ms = 2 * max(m["measured_ms"] for m in latency["measurements"])
    out = _run(
        ["search", "--supernet", str(trained), "--latency-model", str(root / "latency.json"),
         "--budget-ms", f"{prefill_ms:.4f}", "--also-latency-model", str(root / "decode.json"),
         "--also-budget-ms", f"{budget:.4f}", "--trials", "3", "--data", corpus,
         "--max-length", "16", "--examples", "8", "--no-remeasure",
         "--out", str(root / "search-both")],
        capsys,
    )  # fmt: skip
    both = json.loads((root / "search-both" / "pareto.json").read_text())
    assert both["also"][0]["target"]["phase"] == "decode"
    assert both["best"]["also"][0]["predicted_ms"] <= budget and "decode:" in out
    for flags, message in [
        (["--also-budget-ms", "3"], "need --also-latency-model"),
        (["--also-latency-model", str(root / "decode.json")], "needs its budget"),
    ]:
        argv = ["search", "--supernet", str(trained), "--latency-model",
                str(root / "latency.json"), "--budget-ms", "5", "--trials", "1", "--data",
                corpus, "--out", str(root / "search-bad"), *flags]  # fmt: skip
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert (
        main(
            [
                "search",
                "--supernet",
                str(trained),
                "--latency-model",
                str(root / "decode.json"),
                "--phase",
                "prefill",
                "--budget-ms",
                "1",
                "--trials",
                "1",
                "--data",
                corpus,
                "--out",
                str(root / "search-wrong"),
            ]
        )
        == 2
    )  # fmt: skip  (a decode profile is not a prefill one)

    # the min subnet is uniform: a stock LlamaForCausalLM checkpoint with the tokenizer
    out = _run(
        ["export", "--supernet", str(trained), "--subnet", "min", "--out", str(root / "small")],
        capsys,
    )
    assert "verified against the supernet" in out
    small = AutoModelForCausalLM.from_pretrained(root / "small")
    assert type(small) is LlamaForCausalLM
    assert (root / "small" / "tokenizer_config.json").is_file()
    supernet = ofa.load_supernet(trained).eval()
    ids = torch.randint(len(small.get_input_embeddings().weight), (2, 12))
    with torch.no_grad(), supernet.using(supernet.space.min_subnet()):
        expected = supernet(input_ids=ids).logits
    with torch.no_grad():
        got = small.eval()(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # the search's best (per-layer or not) exports too, verified
    out = _run(
        ["export", "--supernet", str(trained), "--subnet", "best", "--search",
         str(root / "search"), "--out", str(root / "best")],
        capsys,
    )  # fmt: skip
    assert "verified against the supernet" in out


@pytest.fixture(scope="module")
def converted(workspace):
    root = workspace
    if not (root / "plain").exists():
        assert main(["convert", "--model", str(root / "llama"), "--out", str(root / "plain")]) == 0
    return root / "plain"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give --data FILE"),
        (["--data", "rotten_tomatoes"], "not the demo data set 'rotten_tomatoes'"),
        (["--data", "{d}/corpus.txt", "--theseus"], "--theseus: only for BERT-family"),
        (["--data", "{d}/corpus.txt", "--text-pair-column", "b"], "--text-pair-column: only"),
    ],
    ids=["no-data", "demo-data", "theseus", "text-pair"],
)
def test_decoder_train_refusals_exit_2_with_one_line(
    workspace, converted, tmp_path, capsys, extra, message
):
    argv = ["train", "--supernet", str(converted), "--teacher", str(workspace / "llama"),
            "--out", str(tmp_path / "run"), "--steps", "1"]  # fmt: skip
    assert main([*argv, *[e.format(d=workspace) for e in extra]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert "--data" in err or "only for BERT" in err


def test_decoder_export_refuses_bert_only_flags(workspace, converted, tmp_path, capsys):
    argv = ["export", "--supernet", str(converted), "--subnet", "min",
            "--out", str(tmp_path / "out"), "--sparsity", "2:4"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--sparsity 2:4: only for BERT-family" in err, err
    assert not (tmp_path / "out").exists()
