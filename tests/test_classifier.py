"""The judge: learns the tiny cache's visible attributes, reports honest accuracies, saves/loads weights_only."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TINY_ATTRIBUTES, draw_tiny_face, write_tiny_cache

from data.cache import load_cache, split_to_device, to_float_images
from models.classifier import (
    AttributeJudge,
    JudgeConfig,
    accuracy_report,
    augment,
    load_judge,
    train_judge,
)

FAST = JudgeConfig(widths=(8, 16), epochs=6, batch_size=32, lr=5e-3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cache = load_cache(write_tiny_cache(tmp_path_factory.mktemp("judge") / "cache", n=320, size=16))
    judge, report = train_judge(cache, FAST, "cpu", progress=False)
    return cache, judge, report


def test_judge_learns_the_tiny_attributes(trained):
    cache, judge, report = trained
    assert report["split"] == "test" and report["num_test"] == 32 and report["num_train"] == 256
    assert report["arch"] == "plain" and report["num_counterfactual"] == 0
    assert set(report["attributes"]) == set(TINY_ATTRIBUTES)
    assert report["mean_accuracy"] >= 0.9, report["attributes"]
    assert report["mean_balanced_accuracy"] >= 0.85, report["attributes"]
    # the report's number is what the judge does on the test split
    images, labels = split_to_device(cache, "test", "cpu")
    predicted = judge.predict(images)  # uint8 input accepted
    assert predicted.dtype == torch.bool and predicted.shape == labels.shape
    assert np.isclose((predicted == labels).float().mean().item(), report["mean_accuracy"])
    assert torch.equal(predicted, judge.predict(to_float_images(images), batch_size=7))  # batching changes nothing


def test_judge_round_trip_weights_only_and_reuse(trained):
    cache, judge, report = trained
    path = cache.directory / FAST.file_name()
    assert path.is_file() and not report["reused"]
    raw = torch.load(path, weights_only=True)  # nothing pickled
    assert raw["attributes"] == list(TINY_ATTRIBUTES) and raw["cache_fingerprint"] == cache.fingerprint
    loaded, data = load_judge(path)
    x = to_float_images(split_to_device(cache, "test", "cpu")[0])
    with torch.no_grad():
        assert torch.allclose(loaded(x), judge(x), atol=1e-5)
    assert loaded.config == FAST and loaded.attribute_names == list(TINY_ATTRIBUTES)

    again, again_report = train_judge(cache, FAST, "cpu", progress=False)
    assert again_report["reused"] and again_report["mean_accuracy"] == report["mean_accuracy"]
    with torch.no_grad():
        assert torch.allclose(again(x), judge(x), atol=1e-5)


def test_judge_retrains_when_the_cache_changes(tmp_path):
    directory = write_tiny_cache(tmp_path / "cache", n=96, size=32)
    config = JudgeConfig(widths=(8, 16), epochs=1, batch_size=32)
    _, first = train_judge(load_cache(directory), config, "cpu", progress=False)
    _, again = train_judge(load_cache(directory), config, "cpu", progress=False)
    assert not first["reused"] and again["reused"]
    write_tiny_cache(directory, n=96, size=32, seed=1)  # the same folder rebuilt with other images and labels
    _, second = train_judge(load_cache(directory), config, "cpu", progress=False)
    assert (directory / config.file_name()).is_file() and not second["reused"]  # carried over, refused by fingerprint
    other = JudgeConfig(widths=(8, 16), epochs=2, batch_size=32)
    before = (directory / config.file_name()).read_bytes()
    _, third = train_judge(load_cache(directory), other, "cpu", progress=False)
    assert not third["reused"]  # a different judge config too, kept beside the first, not over it
    assert other.file_name() != config.file_name() and (directory / config.file_name()).read_bytes() == before


def test_accuracy_report_balanced_accuracy_by_hand():
    truth = np.array([[1], [1], [0], [0], [0], [0], [0], [0]], dtype=bool)
    predicted = np.array([[1], [0], [0], [0], [0], [0], [0], [0]], dtype=bool)
    report = accuracy_report(predicted, truth, ["A"])["A"]
    assert report["accuracy"] == pytest.approx(7 / 8)
    assert report["balanced_accuracy"] == pytest.approx((1 / 2 + 6 / 6) / 2)
    assert report["positive_rate"] == pytest.approx(2 / 8)


def test_augment_keeps_shape_and_range():
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    y = augment(x, 0.1, True, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert torch.equal(augment(x, 0.0, False, torch.Generator()), x)


def test_judge_rejects_an_image_size_it_cannot_downsample():
    with pytest.raises(ValueError, match="not divisible"):
        AttributeJudge(["A"], 36, JudgeConfig(widths=(8, 16, 32)))


def test_augment_is_deterministic_for_a_seed():
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    a = augment(x, 0.1, True, torch.Generator().manual_seed(3))
    b = augment(x, 0.1, True, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, augment(x, 0.1, True, torch.Generator().manual_seed(4)))
    flipped = augment(x, 0.0, True, torch.Generator().manual_seed(0))  # flips only: each image is itself or mirrored
    same = [torch.equal(f, o) for f, o in zip(flipped, x)]
    mirrored = [torch.equal(f, o.flip(2)) for f, o in zip(flipped, x)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(mirrored) and any(same)


def test_judge_training_is_reproducible_for_a_seed(tmp_path, trained):
    cache, judge, _ = trained
    again, _ = train_judge(cache, FAST, "cpu", path=tmp_path / "again.pt", progress=False)
    for key, value in judge.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_the_inference_copy_is_the_same_judge_for_both_architectures(tmp_path):
    cache = load_cache(write_tiny_cache(tmp_path / "cache", n=96, size=32))
    x = to_float_images(split_to_device(cache, "test", "cpu")[0])
    for arch in ("plain", "residual"):
        judge, _ = train_judge(cache, JudgeConfig(arch=arch, widths=(8, 16), epochs=1, batch_size=32), "cpu",
                               progress=False)
        fast = judge.for_inference()
        with torch.no_grad():
            torch.testing.assert_close(fast(x), judge.eval()(x), atol=1e-4, rtol=1e-4)  # folded BatchNorm: same logits
        plain_layers = [type(m).__name__ for m in fast.features]
        assert ("BatchNorm2d" not in plain_layers) == (arch == "plain")  # only the plain judge's norms fold
        if arch == "plain" and torch.backends.mkldnn.is_available():  # each folded conv runs with its ReLU in one call
            unfused = torch.nn.Sequential(*[m for layer in fast.features for m in (
                (layer.conv, torch.nn.ReLU()) if type(layer).__name__ == "_ConvReLU" else (layer,))])
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                assert torch.equal(fast.features(x), unfused(x))  # the same bf16 logits as the two layers
                from torch.profiler import ProfilerActivity, profile
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    fast(x)
            ops = {event.key for event in prof.key_averages()}
            assert "mkldnn::_convolution_pointwise" in ops and "aten::relu" not in ops and "aten::relu_" not in ops


def test_counterfactual_faces_teach_the_judge_an_attribute_apart_from_its_companion(tmp_path):
    # every training face with Bangs is Male and the other way round; the test faces show one without the other
    rng = np.random.default_rng(0)
    n, size = 400, 16
    labels = rng.random((n, len(TINY_ATTRIBUTES))) < 0.5
    labels[:, 2] = labels[:, 0]
    cache = load_cache(write_tiny_cache(tmp_path / "cache", n=n, size=size, labels=labels))
    asked = []

    def flipped(rows):  # each face redrawn with one attribute flipped, as the procedural generator's truth does
        asked.append(rows)
        pick = np.random.default_rng(int(rows[0])).integers(0, len(TINY_ATTRIBUTES), len(rows))
        new = cache.labels("all")[rows].copy()
        new[np.arange(len(rows)), pick] ^= True
        images = np.stack([draw_tiny_face(row, size, np.random.default_rng(int(r))) for r, row in zip(rows, new)])
        return torch.from_numpy(images), torch.from_numpy(new)

    config = JudgeConfig(widths=(8, 16), epochs=8, batch_size=32, lr=5e-3)
    plain, plain_report = train_judge(cache, config, "cpu", progress=False)
    with pytest.raises(ValueError, match=r"counterfactual_share=0.5 needs the true counterfactuals .* set it to 0"):
        train_judge(cache, replace(config, counterfactual_share=0.5), "cpu", progress=False)
    taught, report = train_judge(cache, replace(config, counterfactual_share=0.5), "cpu", counterfactuals=flipped,
                                 progress=False)
    (rows,) = asked
    train = cache.split_indices("train")
    assert len(rows) == len(set(rows.tolist())) == report["num_counterfactual"] == round(0.5 * len(train))
    assert set(rows.tolist()) <= set(train.tolist()) and plain_report["num_counterfactual"] == 0
    assert replace(config, counterfactual_share=0.5).file_name() != config.file_name()  # kept beside the plain one

    apart = np.zeros((200, len(TINY_ATTRIBUTES)), dtype=bool)
    apart[:100, 0] = True  # Bangs without Male
    apart[100:, 2] = True  # Male without Bangs
    images = torch.from_numpy(np.stack([draw_tiny_face(row, size, rng) for row in apart]))
    accuracy = {name: (judge.predict(images)[:, [0, 2]] == torch.from_numpy(apart[:, [0, 2]])).float().mean().item()
                for name, judge in (("plain", plain), ("taught", taught))}
    assert accuracy["taught"] >= 0.95 and accuracy["plain"] <= 0.8, accuracy
