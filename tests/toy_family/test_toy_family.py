"""A third model family added from its own modules only (tests/toy_family): an MLP image
classifier with elastic widths and depth, driven end to end through the public API: convert,
importance and reorder, save / load, extract, train, evaluate, profile, search, export."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import export
import ofa
import search
from ofa.data_images import ImageData
from ofa.elastic import ElasticLinear, ElasticModuleList
from ofa.evaluation import majority_rate
from search import LatencyModel, MeasurePolicy
from tests.toy_family import NAME, registered, registries
from tests.toy_family.export_toy import compare
from tests.toy_family.ofa_toy import ToyMLP, ToySearchSpace, ToySubnet

IN_SHAPE, WIDTH, LAYERS, LABELS = (1, 8, 8), 256, 3, 4
# the subnets' timing is not what this test checks: bounds loose enough for a busy machine
LOOSE = MeasurePolicy(
    warmup=1, repeats=3, min_rounds=3, max_rounds=10, precision=0.1, refuse_above=0.5,
    max_seconds=10.0,
)  # fmt: skip


def _clusters(count: int, seed: int) -> ImageData:
    """Four Gaussian clusters of 8 x 8 one-channel images (the same centres for every split)."""
    centres = 0.6 * torch.randn(LABELS, *IN_SHAPE, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(LABELS, (count,), generator=generator)
    images = centres[labels] + torch.randn(count, *IN_SHAPE, generator=generator)
    return ImageData(images, labels, tuple(f"c{i}" for i in range(LABELS)))


TRAIN, TEST = _clusters(512, seed=1), _clusters(256, seed=2)


def _teacher() -> ToyMLP:
    """A trained plain toy MLP (the model a user converts)."""
    torch.manual_seed(0)
    model = ToyMLP(in_shape=IN_SHAPE, widths=(WIDTH,) * LAYERS, num_labels=LABELS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for batch in TRAIN.batches(64, shuffle=True):
        loss = nn.functional.cross_entropy(model(batch["pixel_values"]), batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _diff(a: nn.Module, b: nn.Module) -> float:
    return compare(a, b, IN_SHAPE)


@pytest.fixture
def toy() -> Iterator[None]:
    """The toy family registered in ofa, search and export for one test, then removed."""
    with registered():
        yield


@pytest.fixture(scope="module")
def teacher() -> ToyMLP:
    return _teacher()


def test_registration_touches_nothing_else():
    """Registering adds the toy family to each registry; leaving removes it, order restored."""
    before = {name: list(registry) for name, registry in registries().items()}
    assert all(NAME not in names for names in before.values())
    with registered():
        assert all(NAME in registry for registry in registries().values())
        names = list(ofa.families.FAMILIES)
        assert names[-2:] == [NAME, "cnn"]  # before="cnn"
        assert names[:-2] == before["ofa"][:-1]  # the built-in families ahead of it, in order
        assert ofa.families.family_for(_tiny()).name == NAME
    assert {name: list(registry) for name, registry in registries().items()} == before
    with pytest.raises(TypeError, match="does not support ToyMLP"):
        ofa.convert(_tiny())


def _tiny() -> ToyMLP:
    return ToyMLP(in_shape=IN_SHAPE, widths=(8, 8), num_labels=LABELS)


def test_convert_reorder_save_load(toy, teacher, tmp_path):
    supernet = ofa.convert(teacher)
    assert supernet.family_name == NAME and isinstance(supernet.space, ToySearchSpace)
    assert supernet.space.widths == (64, 128, 256) and supernet.space.depths == (1, 2, 3)
    assert type(teacher.layers) is nn.ModuleList  # the given model is not modified
    assert isinstance(supernet.model.layers, ElasticModuleList)
    supernet.eval()
    assert _diff(supernet, teacher) <= 1e-6  # the max subnet is the model (fp32)

    # importance (taylor on batches, and l1) and reordering: the full model is unchanged
    taylor = ofa.importance.score(supernet, TRAIN.batches(64), metric="taylor", max_batches=2)
    assert set(taylor) == {f"layers.{i}.units" for i in range(LAYERS)}
    scores = ofa.importance.score(supernet, metric="l1")
    applied = ofa.reorder_(supernet, scores)
    assert any(not torch.equal(p, torch.arange(WIDTH)) for p in applied.values())
    assert _diff(supernet, teacher) <= 1e-5  # a permutation (sums in another order)
    after = ofa.importance.score(supernet, metric="l1")
    for values in after.values():  # the most important units now come first
        assert torch.all(values[:-1] >= values[1:] - 1e-9)

    small = ToySubnet(widths=(128, 64))
    supernet.set_subnet(small)
    directory = supernet.save(tmp_path / "supernet")
    loaded = ofa.load_supernet(directory)
    assert loaded.family_name == NAME and loaded.space == supernet.space
    assert loaded.active_subnet == small
    assert _diff(loaded, supernet) <= 1e-6
    with loaded.using(loaded.space.max_subnet()), supernet.using(supernet.space.max_subnet()):
        assert _diff(loaded, supernet) <= 1e-6
        assert _diff(loaded, teacher) <= 1e-5


def test_extract_gives_a_plain_smaller_model(toy, teacher):
    supernet = ofa.convert(teacher).eval()
    subnet = ToySubnet(widths=(128, 64))
    small = supernet.extract(subnet)
    assert type(small) is ToyMLP and type(small.layers) is nn.ModuleList
    assert not any(isinstance(m, (ElasticLinear, ElasticModuleList)) for m in small.modules())
    assert [layer.out_features for layer in small.layers] == [128, 64]
    params = sum(p.numel() for p in small.parameters())
    assert params == supernet.num_params(subnet) < sum(p.numel() for p in teacher.parameters())
    assert supernet.flops(subnet) < supernet.flops(supernet.space.max_subnet())
    with supernet.using(subnet):
        assert _diff(small, supernet) <= 1e-5
    assert supernet.active_subnet == supernet.space.max_subnet()  # using() restored it
    with pytest.raises(ValueError, match="outside the search space"):
        supernet.extract(ToySubnet(widths=(100,)))
    with pytest.raises(TypeError, match="ToySubnet"):
        supernet.set_subnet(ofa.CnnSubnet(widths=(8,)))


def _config() -> ofa.TrainConfig:
    """Width, then depth, then one fixed subnet (PaddleSlim's mode), as JSON-able phases."""
    return ofa.TrainConfig(
        phases=(
            ofa.PhaseConfig(name="width", steps=8, widths="all", min_width=0.25),
            ofa.PhaseConfig(name="depth", steps=8, widths="all", depths="all"),
            ofa.PhaseConfig(name="fixed", steps=4, subnet=ToySubnet(widths=(64,))),
        ),
        batch_size=32,
        learning_rate=3e-3,
        distill=ofa.DistillConfig(alpha=0.5),
        bf16=False,
    )


@pytest.fixture(scope="module")
def trained(teacher, tmp_path_factory) -> tuple[ofa.Supernet, dict[str, float], object]:
    """A supernet trained in two calls (the second resumes from the first's checkpoint), with
    the min subnet's accuracy before training."""
    out = tmp_path_factory.mktemp("train")
    with registered():
        supernet = ofa.convert(teacher)
        smallest = supernet.space.min_subnet()
        before = {"min": ofa.evaluate(supernet, smallest, TEST)}
        config = _config()
        first = ofa.train_(
            supernet, teacher=teacher, train_data=TRAIN, eval_data=TEST, config=config,
            output_dir=out, max_steps=10, progress=False,
        )  # fmt: skip
        assert first.steps == 10
        result = ofa.train_(
            supernet, teacher=teacher, train_data=TRAIN, eval_data=TEST, config=config,
            output_dir=out, resume=True, progress=False,
        )  # fmt: skip
    return supernet, before, result


def test_train_and_evaluate(toy, trained, teacher):
    supernet, before, result = trained
    assert ofa.TrainConfig.from_json(_config().to_json()) == _config()  # the toy subnet too
    assert result.steps == 20 and torch.isfinite(torch.tensor(result.final_loss))
    rows = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
    assert [r["step"] for r in rows if "eval" not in r] == list(range(1, 21))
    evals = {r["phase"]: r["eval"] for r in rows if "eval" in r}
    assert set(evals["width"]) == {"max", "min"} and set(evals["fixed"]) == {"subnet"}
    assert supernet.active_subnet == supernet.space.max_subnet() and not supernet.training
    smallest = supernet.space.min_subnet()
    trained_min = ofa.evaluate(supernet, smallest, TEST)
    assert 0.0 <= trained_min <= 1.0
    # the min subnet learned (untrained, its head reads another layer's units)
    assert trained_min > before["min"] + 0.2 and trained_min > majority_rate(TEST) + 0.1
    with pytest.raises(ValueError, match="calibration_data"):
        ofa.evaluate(supernet, smallest, TEST, calibration_data=TRAIN)


def test_profile_search_export(toy, trained, teacher, tmp_path):
    supernet, _, _ = trained
    space = supernet.space
    latency = LatencyModel.profile(
        supernet, device="cpu", batch_size=512, num_threads=1, num_train=6, num_test=3,
        warmup=1, rounds=3, policy=LOOSE, max_error=None,
    )  # fmt: skip
    assert latency.family == NAME and latency.target.image_size == IN_SHAPE[1:]
    assert {key[0] for key in latency.table} == {"hidden", "head"}
    assert latency(space.max_subnet()) > latency(space.min_subnet()) > 0
    loaded = LatencyModel.load(latency.save(tmp_path / "latency.json"), space=space)
    assert loaded(ToySubnet(widths=(128, 64))) == latency(ToySubnet(widths=(128, 64)))

    found = search.run(
        supernet,
        evaluate=lambda s, subnet: ofa.evaluate(s, subnet, TEST),
        latency=latency,
        config=search.SearchConfig(budget_fraction=0.6, trials=8, policy=LOOSE, max_error=0.9),
        out_dir=tmp_path / "search",
    )
    assert found.num_trials == 8 and found.pareto
    best = found.best
    assert best is not None and space.contains(best.subnet) and best.share <= 0.6
    assert best.subnet != space.max_subnet()
    assert best.num_params == supernet.num_params(best.subnet)
    header = (tmp_path / "search" / "pareto.csv").read_text().splitlines()[0]
    assert "depth,widths" in header

    directory = export.save(supernet, best.subnet, tmp_path / "export", accuracy=best.accuracy)
    manifest = export.read_manifest(directory)
    assert manifest["family"] == NAME and manifest["subnet"] == best.subnet.to_dict()
    model = export.load(directory)
    assert type(model) is ToyMLP and not model.training
    params = sum(p.numel() for p in model.parameters())
    assert params == manifest["params"] < sum(p.numel() for p in teacher.parameters())
    with supernet.using(best.subnet):
        assert _diff(model, supernet) <= 1e-5
    checked = export.verify(directory, supernet, best.subnet)
    assert checked.passed and checked.max_abs_diff <= 1e-5
    with pytest.raises(ValueError, match="onnx"):
        export.save(
            supernet, best.subnet, tmp_path / "onnx", config=export.ExportConfig(onnx=True)
        )
