"""The trainer's pure parts on small inputs: schedule, losses, class weights, ROC/PR, models,
layer transfer and freezing, standardisation."""
import numpy as np
import pytest
import tensorflow as tf

from pipeline.dataset.manifest import Manifest, Shard, Split
from trainer.errors import UsageError
from trainer.input.datasets import Standardize
from trainer.model import objective
from trainer.model.models import MODELS, build_model
from trainer.model.schedule import WarmupDecay
from trainer.results import metrics as evaluate
from trainer.state import warmstart


def lr(schedule, step):
    return float(schedule(tf.constant(step)))


def test_warmup_then_cosine_and_step_decay():
    cosine = WarmupDecay(0.1, 4, warmup_steps=10, total_steps=110)
    assert lr(cosine, 0) == pytest.approx(0.1) and lr(cosine, 5) == pytest.approx(0.25)
    assert lr(cosine, 10) == pytest.approx(0.4) and lr(cosine, 60) == pytest.approx(0.2)
    assert lr(cosine, 110) == pytest.approx(0.0, abs=1e-7)
    step = WarmupDecay(0.1, 2, 10, 100, "step", boundaries=[50, 75], factor=0.1)
    assert [round(lr(step, s), 6) for s in (10, 49, 50, 74, 75, 99)] == [0.2, 0.2, 0.02, 0.02, 0.002, 0.002]


def test_label_smoothing_matches_the_dense_formula():
    logits = tf.constant([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    labels = tf.constant([0, 2])
    smoothed = objective.make_loss(3, 0.3)(labels, logits).numpy()
    target = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    expected = -(target * tf.nn.log_softmax(logits).numpy()).sum(axis=1)
    np.testing.assert_allclose(smoothed, expected, rtol=1e-5)


def manifest(counts):
    split = Split(shards=[Shard("f", sum(counts), 1, "x")], class_counts=counts)
    return Manifest("m", [str(i) for i in range(len(counts))], [8, 8, 1], {"train": split}, {}, {})


def test_balanced_class_weights_favour_the_rare_class():
    weights = objective.balanced_class_weights(manifest([900, 100]))
    assert weights[0] == pytest.approx(1000 / 1800) and weights[1] == pytest.approx(5.0)
    assert 900 * weights[0] + 100 * weights[1] == pytest.approx(1000)   # mean weight per image 1
    with pytest.raises(UsageError, match="1 class"):
        objective.balanced_class_weights(manifest([10, 0]))


def test_roc_pr_from_score_histograms():
    hist = np.zeros((2, evaluate.SCORE_BINS), np.int64)
    hist[0, 10], hist[1, 190] = 50, 50                 # perfectly separated
    perfect = evaluate.roc_pr(hist, ["a", "b"])
    assert perfect["roc_auc"] == 1.0 and perfect["average_precision"] == 1.0
    hist[:] = 0
    hist[0, 100], hist[1, 100] = 40, 40                # indistinguishable
    chance = evaluate.roc_pr(hist, ["a", "b"])
    assert chance["roc_auc"] == pytest.approx(0.5) and chance["average_precision"] == pytest.approx(0.5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_for_the_manifest_shape(name):
    model = build_model(name, (28, 28, 1), 7)
    assert model(tf.zeros((2, 28, 28, 1))).shape == (2, 7)
    assert model.layers[-1].name == "head" and model.layers[-1].dtype_policy.compute_dtype == "float32"
    has_batch_norm = any(isinstance(layer, tf.keras.layers.BatchNormalization) for layer in model.layers)
    assert has_batch_norm == (name != "linear")          # the baseline has none, by design


def test_transfer_keeps_matching_layers_and_a_new_head():
    source, target = build_model("cnn", (28, 28, 1), 10), build_model("cnn", (28, 28, 1), 3)
    moved = warmstart.transfer(source, target)
    assert moved["new"] == {"head": "shape differs (e.g. another class count)"}
    np.testing.assert_array_equal(target.get_layer("fc1").get_weights()[0],
                                  source.get_layer("fc1").get_weights()[0])
    with pytest.raises(UsageError, match="no layer"):
        warmstart.transfer(build_model("resnet20", (28, 28, 1), 3), build_model("cnn", (28, 28, 1), 3))


def test_freeze_by_prefix_and_all_but_head():
    model = build_model("cnn", (28, 28, 1), 10)
    assert warmstart.freeze(model, "block1,fc") == ["block1_conv", "block1_bn", "fc1", "fc1_bn"]
    model = build_model("cnn", (28, 28, 1), 10)
    warmstart.freeze(model, "all-but-head")
    assert [w.name.split("/")[0] for w in model.trainable_weights] == ["head", "head"]
    with pytest.raises(UsageError, match="nope matches no layer"):
        warmstart.freeze(model, "nope")


def test_standardize_uses_manifest_statistics_or_plain_scaling():
    image = tf.constant([[[0], [255]]], tf.uint8)
    plain, _ = Standardize()(image, 0)
    np.testing.assert_allclose(plain.numpy().ravel(), [0.0, 1.0])
    centred, _ = Standardize([0.5], [0.25])(image, 0)
    np.testing.assert_allclose(centred.numpy().ravel(), [-2.0, 2.0])


def test_the_cycle_time_default_leaves_the_users_and_the_autotuners_choice():
    from trainer.runtime.devices import DEFAULT_CYCLE_TIME_MS, default_cycle_time

    unset = {}
    assert default_cycle_time(unset) == DEFAULT_CYCLE_TIME_MS and unset == {"HOROVOD_CYCLE_TIME": "20"}
    chosen = {"HOROVOD_CYCLE_TIME": "5"}
    assert default_cycle_time(chosen) is None and chosen == {"HOROVOD_CYCLE_TIME": "5"}
    tuned = {"HOROVOD_AUTOTUNE": "1"}
    assert default_cycle_time(tuned) is None and "HOROVOD_CYCLE_TIME" not in tuned


def test_an_error_is_agreed_on_every_rank_and_named_by_rank_when_not_all_found_it():
    """The collective is replaced by the list it would return (the real one: test_trainer_cli)."""
    from pipeline.dataset.storage import TransientStorageError
    from trainer.errors import OneLine
    from trainer.runtime import agree

    def failing():
        raise UsageError("bucket x does not exist")

    def busy():
        raise TransientStorageError("read s3://b/m: S3 at x answered 503 SlowDown after 8 tries")

    missing = (2, "bucket x does not exist")
    with pytest.raises(agree.ReportedByRankZero):     # rank 1 stops, silently
        agree.on_every_rank(lambda: 1, 1, lambda mine: [None, missing])
    with pytest.raises(OneLine, match=r"^rank 1: bucket x does not exist$"):
        agree.on_every_rank(lambda: 1, 0, lambda mine: [mine, missing])
    with pytest.raises(OneLine, match=r"^bucket x does not exist$") as stopped:   # all ranks: no prefix
        agree.on_every_rank(failing, 0, lambda mine: [mine, mine])
    assert stopped.value.code == 2
    with pytest.raises(OneLine, match="503 SlowDown") as stopped:   # a store that may recover: 75
        agree.on_every_rank(busy, 0, lambda mine: [mine, mine])
    assert stopped.value.code == 75
    with pytest.raises(agree.ReportedByRankZero) as stopped:
        agree.on_rank_zero(lambda: 1, 1, lambda value, root_rank: (None, (75, "busy")))
    assert stopped.value.code == 75
    assert agree.on_rank_zero(lambda: {"step": 3}, 0, lambda value, root_rank: value) == {"step": 3}
