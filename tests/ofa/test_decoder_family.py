"""Decoder-only LM supernets (Llama with GQA, Qwen2 with biases and tied embeddings, Mistral with
a sliding window shorter than the sequence): convert, importance and reorder, extract, counts,
save / load, profile and search."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaModel,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

import ofa
import search
from ofa.decoder_space import DecoderSearchSpace, DecoderSubnet
from ofa.elastic import (
    ElasticHeadOutput,
    ElasticHeadProjection,
    ElasticLayerStack,
    ElasticRMSNorm,
)

VOCAB, SEQ = 96, 12
KINDS = ("llama", "qwen2", "mistral")
_SHAPE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=8,  # 2 KV heads of 4 query heads each
    num_key_value_heads=2,
    head_dim=16,  # apart from hidden_size / num_attention_heads (8)
    max_position_embeddings=64,
)


def make_decoder(kind: str, *, seed: int = 0, **overrides: object) -> nn.Module:
    """A tiny random decoder of ``kind`` in eval mode."""
    torch.manual_seed(seed)
    settings = {**_SHAPE, **overrides}
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**settings)).eval()
    if kind == "llama-bare":
        return LlamaModel(LlamaConfig(**settings)).eval()
    if kind == "qwen2":  # q/k/v biases; tied embeddings as Qwen2.5-0.5B
        return Qwen2ForCausalLM(Qwen2Config(**settings, tie_word_embeddings=True)).eval()
    if kind == "mistral":  # a window shorter than the test sequences
        return MistralForCausalLM(MistralConfig(**settings, sliding_window=5)).eval()
    raise ValueError(kind)


def elastic_space(supernet: ofa.Supernet) -> DecoderSearchSpace:
    """The default space with the KV heads elastic too."""
    return dataclasses.replace(supernet.space, num_kv_heads=(1, 2))


def decoder_inputs(batch: int = 3, length: int = SEQ, *, seed: int = 1) -> dict[str, torch.Tensor]:
    """Token ids with padding at the end of every row but the first."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(VOCAB, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(1, batch):
        attention_mask[row, length - 2 * row :] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def output(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out.last_hidden_state


def diff(a: nn.Module, b: nn.Module, inputs: dict[str, torch.Tensor] | None = None) -> float:
    inputs = decoder_inputs() if inputs is None else inputs
    return float((output(a, inputs) - output(b, inputs)).abs().max())


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a shared machine: one thread is many times faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=KINDS)
def converted(request) -> tuple[str, nn.Module, ofa.Supernet]:
    model = make_decoder(request.param)
    supernet = ofa.convert(model)
    return request.param, model, ofa.convert(model, elastic_space(supernet)).eval()


def test_space_and_subnet_are_frozen_json():
    space = DecoderSearchSpace.default(
        num_layers=6, max_num_kv_heads=2, max_heads_per_kv=4, head_dim=16,
        max_ffn_dim=256, max_hidden_size=128,
    )  # fmt: skip
    assert space.depths == (3, 4, 5, 6) and space.heads_per_kv == (1, 2, 3, 4)
    assert space.num_kv_heads == (2,) and space.hidden_sizes == (64, 96, 128)
    assert DecoderSearchSpace.from_json(space.to_json()) == space
    subnet = space.sample(torch.Generator().manual_seed(0))
    assert space.contains(subnet) and DecoderSubnet.from_json(subnet.to_json()) == subnet
    assert len({subnet, DecoderSubnet.from_dict(subnet.to_dict())}) == 1  # hashable
    assert space.max_subnet().num_heads == (8,) * 6 and space.max_subnet().is_uniform
    assert len(space.uniform_subnets()) == 4 * 4 * 1 * 4 * 3
    with pytest.raises(ValueError, match="one entry per kept layer"):
        DecoderSubnet(layers=(0, 1), heads_per_kv=(1,), num_kv_heads=(2, 2), ffn_dims=(64, 64),
                      hidden_size=64)  # fmt: skip
    with pytest.raises(ValueError, match="unknown DecoderSubnet fields"):
        DecoderSubnet.from_dict({**subnet.to_dict(), "num_heads": [1]})
    with pytest.raises(ValueError, match="heads_per_kv .5. not in"):
        space.check(dataclasses.replace(space.max_subnet(), heads_per_kv=(5,) * 6))
    with pytest.raises(ValueError, match="does not divide"):
        dataclasses.replace(space, hidden_step=48)


def test_elastic_head_modules_keep_dense_shapes():
    dense_q, dense_o = nn.Linear(32, 64), nn.Linear(64, 24)
    q = ElasticHeadProjection.from_dense(dense_q, grid=(2, 4), head_dim=8)
    o = ElasticHeadOutput.from_dense(dense_o, grid=(2, 4), head_dim=8)
    x = torch.randn(3, 32)
    torch.testing.assert_close(q(x), dense_q(x), rtol=0, atol=0)
    torch.testing.assert_close(o(dense_q(x)), dense_o(dense_q(x)), rtol=0, atol=0)
    assert q.weight.shape == (2, 4, 8, 32) and o.weight.shape == (24, 2, 4, 8)
    assert {k: tuple(v.shape) for k, v in q.state_dict().items()} == {
        "weight": (64, 32),
        "bias": (64,),
    }
    q.active_grid = (2, 1)  # query head 0 of each KV head: rows 0-7 and 32-39
    rows = torch.cat([torch.arange(0, 8), torch.arange(32, 40)])
    torch.testing.assert_close(
        q(x[:, :16]), x[:, :16] @ dense_q.weight[rows, :16].T + dense_q.bias[rows]
    )
    fresh = ElasticHeadProjection.from_dense(nn.Linear(32, 64), grid=(2, 4), head_dim=8)
    fresh.load_state_dict(dense_q.state_dict())
    torch.testing.assert_close(fresh.weight, q.weight, rtol=0, atol=0)
    norm = ElasticRMSNorm(8)
    assert norm(torch.randn(2, 5)).shape == (2, 5)
    stack = ElasticLayerStack.from_dense(nn.ModuleList(nn.Identity() for _ in range(3)))
    stack.active_indices = (0, 2)
    assert len(stack[:3]) == 2 and stack[1] is list(stack._modules.values())[1]


def test_max_subnet_is_the_model(converted):
    kind, model, supernet = converted
    assert supernet.family_name == "decoder" and isinstance(supernet.space, DecoderSearchSpace)
    assert type(model.model.layers[0].self_attn.q_proj) is nn.Linear  # the model is not modified
    attention = supernet.model.model.layers[0].self_attn
    assert isinstance(attention.q_proj, ElasticHeadProjection)
    if kind == "qwen2":
        assert attention.q_proj.bias is not None and model.config.tie_word_embeddings
        assert supernet.model.lm_head.weight is supernet.model.model.embed_tokens.weight
    long = decoder_inputs(length=20)  # past Mistral's window of 5
    assert diff(supernet, model) <= 1e-5 and diff(supernet, model, long) <= 1e-5


def test_reorder_by_importance_keeps_the_model(converted):
    kind, model, _ = converted
    supernet = ofa.convert(model, elastic_space(ofa.convert(model)))
    batches = [decoder_inputs(seed=s) for s in (2, 3)]
    taylor = ofa.importance.score(supernet, batches, metric="taylor", max_batches=1)
    assert set(taylor) >= {"model.layers.0.kv_heads", "model.layers.0.heads", "hidden"}
    assert taylor["model.layers.0.heads"].shape == (4,) and taylor["hidden"].shape == (64,)
    scores = ofa.importance.score(supernet, batches, metric="activation")
    applied = ofa.reorder_(supernet, scores)
    assert "hidden" in applied  # the LM head reads the hidden channels
    assert any(not torch.equal(p, torch.arange(len(p))) for p in applied.values())
    assert diff(supernet.eval(), model) <= 1e-5
    after = ofa.importance.score(supernet, batches, metric="activation")
    for values in after.values():  # the most important units now come first
        assert torch.all(values[:-1] >= values[1:] * (1 - 1e-6) - 1e-9)
    for metric in ("l1", "l2"):
        ofa.reorder_(supernet, ofa.importance.score(supernet, metric=metric))
    assert diff(supernet, model) <= 1e-5


def test_random_subnets_extract_to_the_supernet(converted):
    kind, model, supernet = converted
    generator = torch.Generator().manual_seed(0)
    long = decoder_inputs(batch=2, length=16)
    worst = 0.0
    for _ in range(10):
        subnet = supernet.space.sample(generator)
        small = supernet.extract(subnet)
        assert type(small) is type(model)
        assert sum(p.numel() for p in small.parameters()) == supernet.num_params(subnet)
        for layer, heads, kv_heads in zip(
            small.model.layers, subnet.num_heads, subnet.num_kv_heads
        ):
            assert layer.self_attn.q_proj.out_features == heads * 16
            assert layer.self_attn.num_key_value_groups * kv_heads == heads
        with supernet.using(subnet):
            worst = max(worst, diff(small, supernet), diff(small, supernet, long))
    assert worst <= 1e-5
    assert supernet.active_subnet == supernet.space.max_subnet()  # using() restored it


def test_flops_are_what_flop_counter_counts():
    model = make_decoder("llama")
    model.config._attn_implementation = "eager"  # sdpa's CPU kernel has no FLOP formula
    supernet = ofa.convert(model, elastic_space(ofa.convert(model)))
    subnet = supernet.space.sample(torch.Generator().manual_seed(3))
    small = supernet.extract(subnet)
    ids = torch.randint(VOCAB, (2, SEQ))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        small(input_ids=ids)
    assert counter.get_total_flops() == supernet.flops(subnet, batch_size=2, seq_len=SEQ)
    assert supernet.flops(supernet.space.min_subnet()) < supernet.flops()


def test_bare_decoder_and_refusals(tmp_path):
    model = make_decoder("llama-bare")
    supernet = ofa.convert(model).eval()
    assert not supernet.hidden_is_internal() and diff(supernet, model) <= 1e-5
    subnet = supernet.space.min_subnet()
    with supernet.using(subnet):
        assert diff(supernet.extract(subnet), supernet) <= 1e-5
    applied = ofa.reorder_(supernet, ofa.importance.score(supernet, metric="l1"))
    assert "hidden" not in applied  # a bare decoder outputs its hidden channels
    config = ofa.TrainConfig(phases=(ofa.PhaseConfig(name="p", steps=1),))
    with pytest.raises(ValueError, match="token blocks"):
        ofa.train_(supernet, teacher=model, train_data=[], config=config, output_dir=tmp_path)
    with pytest.raises(ValueError, match="max_heads_per_kv=2 but the model has 4"):
        ofa.convert(
            model, dataclasses.replace(supernet.space, max_heads_per_kv=2, heads_per_kv=(1, 2))
        )
    phase = ofa.PhaseConfig(name="w", steps=1, num_heads="all", ffn_dims="large",
                            width_multipliers=(0.5,))  # fmt: skip
    part = phase.space_for(supernet.space)
    assert part.heads_per_kv == supernet.space.heads_per_kv and part.ffn_dims == (96, 128)
    assert phase.multiplier_subnets(supernet.space)[0].heads_per_kv[0] == 2


def test_mixed_attention_layers_keep_their_depth():
    """Qwen2 with sliding-window layers after max_window_layers: transformers picks each
    layer's mask by position, so only the widths are elastic."""
    model = make_decoder("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=2)
    supernet = ofa.convert(model).eval()
    assert supernet.space.depths == (4,)
    long = decoder_inputs(length=16)
    assert diff(supernet, model, long) <= 1e-5
    subnet = supernet.space.sample(torch.Generator().manual_seed(0))
    with supernet.using(subnet):
        assert diff(supernet.extract(subnet), supernet, long) <= 1e-5
    with pytest.raises(ValueError, match="depth cannot shrink"):
        ofa.convert(model, dataclasses.replace(supernet.space, depths=(2, 3, 4)))


def test_save_load_round_trip(converted, tmp_path):
    kind, model, supernet = converted
    supernet.model.generation_config.max_new_tokens = 7
    subnet = supernet.space.sample(torch.Generator().manual_seed(5))
    supernet.set_subnet(subnet)
    try:
        loaded = ofa.load_supernet(supernet.save(tmp_path / kind))
        assert loaded.family_name == "decoder" and loaded.space == supernet.space
        assert loaded.active_subnet == subnet and diff(loaded, supernet) <= 1e-6
        assert loaded.model.generation_config.max_new_tokens == 7
        meta = json.loads((tmp_path / kind / "supernet.json").read_text())
        assert meta["model_class"] == type(model).__name__
        with loaded.using(loaded.space.max_subnet()):
            assert diff(loaded, model) <= 1e-5
    finally:
        supernet.set_subnet(supernet.space.max_subnet())


LOOSE = search.MeasurePolicy(
    warmup=1, repeats=2, min_rounds=3, max_rounds=6, precision=0.2, refuse_above=1.0,
    max_seconds=10.0,
)  # fmt: skip


@pytest.mark.slow
def test_profile_and_search_return_a_subnet(tmp_path):
    model = make_decoder("mistral")
    base = ofa.convert(model).space
    space = dataclasses.replace(
        base, depths=(3, 4), heads_per_kv=(2, 4), ffn_dims=(64, 128), hidden_sizes=(48, 64)
    )
    supernet = ofa.convert(model, space).eval()
    latency = search.LatencyModel.profile(
        supernet, device="cpu", batch_size=1, seq_len=16, num_threads=1, num_train=4,
        num_test=2, warmup=1, rounds=2, policy=LOOSE, max_error=None,
    )  # fmt: skip
    assert latency.family == "decoder" and len(latency.table) == 2 * 2 * 1 * 2
    assert latency(space.max_subnet()) > 0
    inputs = decoder_inputs(batch=2)

    def neg_loss(supernet: ofa.Supernet, subnet: DecoderSubnet) -> float:
        with torch.no_grad(), supernet.using(subnet):
            logits = supernet(**inputs).logits
        return -float(
            nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1), inputs["input_ids"][:, 1:].flatten()
            )
        )

    found = search.run(
        supernet,
        evaluate=neg_loss,
        latency=latency,
        config=search.SearchConfig(budget_fraction=0.9, trials=4, policy=LOOSE, max_error=5.0),
        out_dir=tmp_path / "search",
    )
    assert found.num_trials == 4 and found.best is not None
    assert space.contains(found.best.subnet)
    header = (tmp_path / "search" / "pareto.csv").read_text().splitlines()[0]
    assert "heads_per_kv,num_kv_heads,ffn_dims" in header


def test_a_decode_step_is_one_cached_token_at_a_fixed_context():
    """The timed decode call is generate's step: its logits equal the full forward's at the
    new position, and after every call the cache is back at the context length."""
    from search._family_decoder import _DecodeStep

    model = make_decoder("mistral")  # its window (5) is shorter than the context
    step = _DecodeStep(batch_size=2, seq_len=SEQ, vocab_size=VOCAB)
    call = step.bind(model, torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        full = model(input_ids=step.ids).logits[:, -1]
        first, again = call().logits[:, -1], call().logits[:, -1]
    assert torch.allclose(first, full, atol=1e-5) and torch.equal(first, again)


def test_decode_latency_profiles_searches_and_is_refused_for_prefill(tmp_path):
    model = make_decoder("llama")
    model.config._attn_implementation = "eager"
    supernet = ofa.convert(model, elastic_space(ofa.convert(model))).eval()
    space = supernet.space
    decode = search.LatencyTarget(seq_len=32, num_threads=1, phase="decode")
    assert "decode at context 32" in decode.describe()
    assert search.LatencyTarget.from_dict(decode.to_dict()) == decode
    assert "phase" not in search.LatencyTarget().to_dict()  # prefill JSON as it always was
    # FLOPs of the timed step: one token per sequence against 32 cached ones
    family = search._families.latency_family("decoder")
    subnet = space.sample(torch.Generator().manual_seed(2))
    small = supernet.extract(subnet)
    call = family.inputs(supernet, decode).bind(small, torch.device("cpu"), torch.float32)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        call()
    assert counter.get_total_flops() == family.flops(supernet, subnet, decode)
    assert family.flops(supernet, subnet, decode) < family.flops(
        supernet, subnet, dataclasses.replace(decode, phase="prefill")
    )
    latency = search.LatencyModel.profile(
        supernet, device="cpu", seq_len=32, num_threads=1, num_train=6, num_test=2,
        warmup=1, rounds=2, policy=LOOSE, max_error=None, phase="decode",
    )  # fmt: skip
    assert latency.target.phase == "decode" and latency.plan == "decode"
    assert latency(space.max_subnet()) > latency(space.min_subnet()) > 0
    saved = tmp_path / "decode.json"
    latency.save(saved)
    reloaded = search.LatencyModel.load(saved, space=space)
    assert reloaded(space.max_subnet()) == pytest.approx(latency(space.max_subnet()))
    with pytest.raises(ValueError, match="profiled for cpu float32 batch 1 decode at context 32"):
        reloaded.check(dataclasses.replace(decode, phase="prefill"))
    found = search.run(
        supernet,
        evaluate=lambda net, s: -float(net.flops(s)),  # any score: the budget is what is tested
        latency=latency,
        config=search.SearchConfig(
            budget_fraction=0.9,
            trials=4,
            policy=LOOSE,
            max_error=5.0,
            allow_busy=True,
            settle_s=0,
        ),  # fmt: skip  (what is tested is the decode budget, not the machine's load)
        teacher=model,
    )
    assert found.best is not None and found.target["phase"] == "decode"
    assert found.best.share <= 0.9


def test_a_search_holds_a_prefill_and_a_decode_budget_at_once(tmp_path):
    import optuna

    model = make_decoder("llama")
    model.config._attn_implementation = "eager"
    supernet = ofa.convert(model, elastic_space(ofa.convert(model))).eval()
    space = supernet.space
    profiles = {
        phase: search.LatencyModel.profile(
            supernet,
            device="cpu",
            seq_len=32,
            num_threads=1,
            num_train=6,
            num_test=2,
            warmup=1,
            rounds=2,
            policy=LOOSE,
            max_error=None,
            phase=phase,
        )  # fmt: skip
        for phase in ("prefill", "decode")
    }
    prefill, decode = profiles["prefill"], profiles["decode"]
    # a decode budget between the min and the max subnet's prediction: it binds some trials
    decode_ms = 0.5 * (decode(space.min_subnet()) + decode(space.max_subnet()))
    storage = optuna.storages.InMemoryStorage()
    config = search.SearchConfig(
        budget_ms=10 * prefill(space.max_subnet()),  # binds nothing: the decode budget decides
        trials=8,
        remeasure=False,
        sampler="random",
        study_name="both",
    )
    found = search.run(
        supernet,
        evaluate=lambda net, s: float(net.flops(s)),  # the biggest fitting subnet wins
        latency=prefill,
        config=config,
        storage=storage,
        also=[search.Budget(decode, budget_ms=decode_ms)],
    )
    trials = optuna.load_study(study_name="both", storage=storage).get_trials()
    assert len(trials) == 8
    for trial in trials:  # feasible exactly when the decode prediction fits its budget
        (other_ms,) = trial.user_attrs["also_predicted_ms"]
        assert other_ms == pytest.approx(
            decode(DecoderSubnet.from_dict(trial.user_attrs["subnet"]))
        )
        assert search.search.is_feasible(trial) == (other_ms <= decode_ms)
    assert found.best is not None and found.best.also[0].predicted_ms <= decode_ms
    assert found.also[0]["target"]["phase"] == "decode"
    assert found.also[0]["budget_ms"] == decode_ms
    # measured: every Pareto subnet timed beside the teacher on both phases, and the choice
    # made by both measured shares
    found = search.run(
        supernet,
        evaluate=lambda net, s: float(net.flops(s)),
        latency=prefill,
        config=search.SearchConfig(
            budget_fraction=1.0,
            trials=6,
            policy=LOOSE,
            max_error=5.0,
            allow_busy=True,
            settle_s=0,
        ),  # fmt: skip  (the budgets are tested, not the machine's load)
        teacher=model,
        also=[search.Budget(decode, budget_fraction=0.95)],
        out_dir=tmp_path / "both",
    )
    assert found.pareto and all(p.also[0].speedup is not None for p in found.pareto)
    assert found.also[0]["teacher_ms"] > 0
    if found.best is not None:
        assert found.best.share <= 1.0 and found.best.also[0].share <= 0.95
        assert "decode:" in found.message
    fitting = [p for p in found.pareto if p.share <= 1.0 and p.also[0].share <= 0.95]
    assert (found.best is None) == (not fitting)
    saved = json.loads((tmp_path / "both" / "pareto.json").read_text())
    assert saved["also"][0]["budget_fraction"] == 0.95
    assert saved["pareto"][0]["also"][0]["target"]["phase"] == "decode"
    # a study keeps its budgets: continued without the decode one, or with another, refused
    quiet = search.SearchConfig(budget_fraction=1.0, trials=1, policy=LOOSE, max_error=5.0)
    with pytest.raises(ValueError, match="was run with second budgets"):
        search.run(supernet, evaluate=lambda n, s: 0.0, latency=prefill, config=quiet,
                   teacher=model, out_dir=tmp_path / "both")  # fmt: skip
    with pytest.raises(ValueError, match="was run with another second budget"):
        search.run(supernet, evaluate=lambda n, s: 0.0, latency=prefill, config=quiet,
                   teacher=model, out_dir=tmp_path / "both",
                   also=[search.Budget(decode, budget_fraction=0.99)])  # fmt: skip
    with pytest.raises(ValueError, match="a target of its own"):
        search.run(supernet, evaluate=lambda n, s: 0.0, latency=prefill, config=config,
                   also=[search.Budget(prefill, budget_ms=1.0)])  # fmt: skip
    with pytest.raises(ValueError, match="either budget_ms or budget_fraction"):
        search.Budget(decode, budget_ms=1.0, budget_fraction=0.5)


def test_decode_is_refused_where_it_means_nothing():
    with pytest.raises(ValueError, match="decode latency is measured in eager PyTorch"):
        search.LatencyTarget(phase="decode", runtime="onnxruntime")
    with pytest.raises(ValueError, match="unknown phase 'generate'"):
        search.LatencyTarget(phase="generate")
    bare = ofa.convert(make_decoder("llama-bare"))
    with pytest.raises(ValueError, match="decode latency needs a causal LM"):
        search.LatencyModel.profile(bare, seq_len=8, num_threads=1, phase="decode")
