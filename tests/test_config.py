import pytest

from trainable.config import TrainConfig
from trainable.errors import ConfigError


def test_defaults_are_the_source_documents():
    c = TrainConfig()
    assert (c.model_lr, c.lr_scheduler_milestones, c.lr_scheduler_gamma) == (1e-2, (0.1, 0.8), 0.1)
    assert (c.batch_size, c.gradient_accumulation_steps, c.use_amp) == (16, 1, True)
    assert (c.optimizer, c.momentum, c.weight_decay, c.residual) == ("sgd", 0.9, 1e-4, False)
    assert (c.validation_interval, c.patch_size, c.frames, c.scale) == (5, 17, 3, 4)
    assert (c.amp_dtype, c.compile) == ("auto", False)  # fp16 + scaler on CUDA, no compile


def test_lr_at_every_milestone():
    c = TrainConfig(epochs=10, epoch_samples=100, model_lr=0.1, lr_scheduler_gamma=0.5,
                    lr_scheduler_milestones=(0.1, 0.8))
    assert c.lr_at(0) == pytest.approx(0.1)
    assert c.lr_at(99) == pytest.approx(0.1)  # just before 10% of 1000 samples
    assert c.lr_at(100) == pytest.approx(0.05)  # at the first milestone
    assert c.lr_at(799) == pytest.approx(0.05)
    assert c.lr_at(800) == pytest.approx(0.025)  # at the second
    assert c.lr_at(1000) == pytest.approx(0.025)


def test_from_dict_round_trip():
    c = TrainConfig(model_lr=3e-3, lr_scheduler_milestones=(0.5,), optimizer="adam")
    assert TrainConfig.from_dict(c.to_dict()) == c


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"cfg.yaml: unknown key 'lr'; valid keys are: .*model_lr"):
        TrainConfig.from_dict({"lr": 0.1}, where="cfg.yaml")


def test_unknown_key_suggests_the_near_valid_one():
    with pytest.raises(ConfigError, match=r"cfg.yaml: unknown key 'batchsize' \(did you mean "
                                          r"`batch_size`\?\); valid keys are: "):
        TrainConfig.from_dict({"batchsize": 8}, where="cfg.yaml")
    # Each of several unknown keys gets its own guess, or none when nothing is near.
    with pytest.raises(ConfigError, match=r"unknown keys 'epoch' \(did you mean `epochs`\?\), "
                                          r"'lr', 'residuals' \(did you mean `residual`\?\); "):
        TrainConfig.from_dict({"residuals": True, "epoch": 1, "lr": 0.1})


@pytest.mark.parametrize(("values", "message"), [
    ({"model_lr": -0.01}, r"`model_lr` is -0.01, but must be > 0"),
    ({"model_lr": "fast"}, r"`model_lr` is 'fast', but must be a number"),
    ({"lr_scheduler_milestones": [0.8, 0.1]}, r"`lr_scheduler_milestones` .* strictly increasing"),
    ({"lr_scheduler_milestones": [0.1, 1.5]}, r"`lr_scheduler_milestones` .* in \(0, 1\)"),
    ({"lr_scheduler_milestones": [0.0]}, r"`lr_scheduler_milestones` .* in \(0, 1\)"),
    ({"batch_size": 0}, r"`batch_size` is 0, but must be >= 1"),
    ({"batch_size": 2.5}, r"`batch_size` is 2.5, but must be an integer"),
    ({"use_amp": "yes"}, r"`use_amp` is 'yes', but must be true or false"),
    ({"compile": 1}, r"`compile` is 1, but must be true or false"),
    ({"optimizer": "rmsprop"}, r"`optimizer` is 'rmsprop', but must be one of"),
    ({"frames": 4}, r"`frames` is 4, but must be 1, 3, 5 or 7"),
    ({"lr_scheduler_gamma": 0}, r"`lr_scheduler_gamma` is 0.0, but must be in \(0, 1\]"),
    ({"epoch_samples": 8, "batch_size": 16}, r"`epoch_samples` is 8, but must be >= batch_size"),
])
def test_invalid_values_name_key_value_and_rule(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(values, where="cfg.yaml")


def test_exponent_without_dot_is_a_number():
    # PyYAML reads `1e-4` as the string "1e-4".
    assert TrainConfig.from_dict({"model_lr": "1e-4"}).model_lr == 1e-4


def test_compile_must_be_a_bool_when_built_directly():
    with pytest.raises(ConfigError, match=r"The value of `compile` is 'yes', but must be true or false"):
        TrainConfig(compile="yes")
