"""TrainConfig: shipped configs, --key=value overrides with types, and clear errors."""
import json

import pytest

from minilooped.training import ConfigError, TrainConfig, apply_overrides, available_configs, load_config
from minilooped.training.cli import train_main
from minilooped.training.config import config_from_cli, parse_cli


def test_default_config_loads_and_names_itself():
    cfg = load_config()
    assert cfg.name == "shakespeare-loop-residual"
    assert cfg.backend == "numpy" and cfg.tokenizer == "char"
    mc = cfg.model_config(vocab_size=80)
    assert mc.variant == "loop_residual" and mc.vocab_size == 80


@pytest.mark.parametrize("name", available_configs())
def test_every_shipped_config_is_valid(name):
    cfg = load_config(name)
    mc = cfg.model_config(vocab_size=50257 if cfg.tokenizer == "gpt2" else 80)
    assert mc.block_size >= 1
    assert cfg.description, f"config {name} needs a description"


def test_expected_configs_are_shipped():
    names = set(available_configs())
    for variant in ("loop-residual", "gpt2", "fully-looped", "contractive", "parcae"):
        assert f"shakespeare-{variant}" in names
    for owt in ("gpt2-124m", "loop-residual-81m", "gpt2-45m-lite", "loop-residual-45m",
                "fully-looped-81m", "contractive-45m", "parcae-47m"):
        assert f"owt-{owt}" in names


def test_overrides_are_parsed_into_the_field_types():
    cfg = config_from_cli(["--max_iters=50", "--learning_rate=3e-3", "--compile=false", "--resume",
                           "--fused_adamw=none", "--backend=torch"])
    assert cfg.max_iters == 50 and isinstance(cfg.max_iters, int)
    assert cfg.learning_rate == 3e-3
    assert cfg.resume is True and cfg.compile is False and cfg.fused_adamw is None


def test_model_fields_bare_or_prefixed():
    cfg = config_from_cli(["shakespeare-parcae", "--n_loops=6", "--model.dropout=0.1", "--dt=none"])
    assert cfg.model_args["n_loops"] == 6 and cfg.model_args["dropout"] == 0.1
    assert cfg.model_args["dt"] is None
    assert cfg.model_config(vocab_size=80).n_loops == 6


def test_unknown_key_lists_close_matches():
    with pytest.raises(ConfigError, match=r"unknown config key --max_iter .*did you mean 'max_iters'"):
        config_from_cli(["--max_iter=5"])
    with pytest.raises(ConfigError, match=r"unknown model key --model.n_loop .*'n_loops'"):
        config_from_cli(["--model.n_loop=5"])


@pytest.mark.parametrize("arg, match", [
    ("--max_iters=ten", r"--max_iters='ten' is not an integer"),
    ("--learning_rate=fast", r"is not a number"),
    ("--compile=maybe", r"is not true or false"),
    ("--n_loops=2.5", r"--n_loops='2.5' is not an integer"),
    ("--backend=jax", r"backend='jax' is not one of numpy, cupy, torch"),
    ("--batch_size=0", r"batch_size=0 must be >= 1"),
    ("--min_lr=1", r"min_lr=1.0 is above learning_rate"),
])
def test_wrong_types_and_values_are_refused(arg, match):
    with pytest.raises(ConfigError, match=match):
        config_from_cli([arg])


def test_impossible_combinations():
    with pytest.raises(ConfigError, match="backend='numpy' runs on the CPU"):
        config_from_cli(["--device=cuda"])
    with pytest.raises(ConfigError, match="PyTorch options"):
        config_from_cli(["--compile"])
    with pytest.raises(ConfigError, match="is invalid: GPTConfig.n_embd=130 is not divisible"):
        config_from_cli(["--n_embd=130"]).model_config(vocab_size=80)


def test_unknown_config_name_and_config_files(tmp_path):
    with pytest.raises(ConfigError, match=r"no shipped config named 'shakespeare-loop'.*did you mean"):
        load_config("shakespeare-loop")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"model": "shakespeare-gpt2", "max_iters": 7}))
    cfg = load_config(str(path))
    assert cfg.name == "mine" and cfg.max_iters == 7
    path.write_text(json.dumps({"max_itres": 7}))
    with pytest.raises(ConfigError, match=r"unknown key 'max_itres'.*'max_iters'"):
        load_config(str(path))
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(str(path))


def test_parse_cli_forms():
    assert parse_cli([]) == ("shakespeare-loop-residual", {})
    assert parse_cli(["x", "--a=1", "--b", "--config=y"]) == ("y", {"a": "1", "b": "true"})
    with pytest.raises(ConfigError, match="unexpected argument"):
        parse_cli(["x", "y"])


def test_overrides_from_python_values():
    cfg = apply_overrides(TrainConfig(), {"max_iters": "3"})
    assert cfg.max_iters == 3
    with pytest.raises(ConfigError, match=r"TrainConfig.max_iters='3' must be an integer"):
        TrainConfig(max_iters="3")


def test_cli_reports_errors_without_traceback(capsys):
    assert train_main(["--max_iter=5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key --max_iter") and "Traceback" not in err
    assert train_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--learning_rate=" in out and "shakespeare-loop-residual" in out
