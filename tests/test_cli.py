"""Every command line parses its flags into its config dataclass, and `--help` fits on a screen."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.cli import parse_config

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("prepare_data", "train_vae", "fit_directions", "edit_faces", "evaluate", "make_figures", "demo", "benchmark")


def test_every_script_help_runs_and_fits_on_a_screen():
    def help_of(script: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", f"experiments.{script}", "--help"], cwd=REPO, capture_output=True,
                              text=True, timeout=120)

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(SCRIPTS, pool.map(help_of, SCRIPTS)))
    for script, result in results.items():
        assert result.returncode == 0, (script, result.stderr[-2000:])
        assert "usage:" in result.stdout and len(result.stdout.splitlines()) <= 50, (script, len(result.stdout.splitlines()))


def test_flags_become_typed_config_fields_nested_ones_included():
    from experiments.evaluate import EvaluateScript
    from experiments.fit_directions import FitScript

    config = parse_config(EvaluateScript, ["--eval-faces", "12", "--strength-candidates", "1", "2.5", "--judge-epochs",
                                           "3", "--judge2-epochs", "2", "--methods", "mean", "probe",
                                           "--no-force-judge", "--composites", "none", "input"])
    assert config.evaluation.eval_faces == 12 and config.evaluation.strength_candidates == (1.0, 2.5)
    assert config.evaluation.judge.epochs == 3 and config.evaluation.methods == ("mean", "probe")
    assert config.evaluation.composites == ("none", "input")
    # a nested config keeps its outer field's default for what is not given: the second judge stays residual
    assert config.evaluation.second_judge.arch == "residual" and config.evaluation.second_judge.epochs == 2
    assert config.evaluation.judge.arch == "plain"
    assert config.evaluation.strength_faces == 500 and config.run is None  # untouched fields keep their defaults
    fit = parse_config(FitScript, ["--run", "runs/001-x", "--min-count", "5", "--conditional", '{"Smiling": ["Male"]}',
                                   "--probe-jobs", "1"])
    assert fit.run == "runs/001-x" and fit.fit.min_count == 5 and fit.fit.conditional == {"Smiling": ["Male"]}
    with pytest.raises(SystemExit):
        parse_config(FitScript, ["--conditional", "{not json"])
    with pytest.raises(SystemExit):
        parse_config(FitScript, ["--methods", "nonsense"])  # not a choice


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_libraries_never_import_scripts_and_scripts_never_import_each_other():
    libraries = ("data", "models", "attributes", "pipeline", "evaluation", "benchmarks")
    for folder in libraries:
        for path in (REPO / folder).glob("*.py"):
            bad = {n for n in _imports(path) if n == "experiments" or n.startswith("experiments.")}
            assert not bad, (path, bad)
    for path in (REPO / "experiments").glob("*.py"):
        bad = {n for n in _imports(path) if n.startswith("experiments")}
        assert not bad, (path, bad)


@pytest.mark.parametrize("script", ["train_vae", "fit_directions"])
def test_every_flag_of_a_torchrun_script_gets_past_torchrun(script):
    """torchrun parses the whole command line first: a script flag that is a prefix of one of its own (`--run` of
    `--run-path`) stops it as ambiguous. Every flag a torchrun-launched script offers must reach the script."""
    from torch.distributed.run import get_args_parser

    help_text = subprocess.run([sys.executable, "-m", f"experiments.{script}", "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=120).stdout
    flags = {f for f in re.findall(r"(--[a-z][a-z-]+)", help_text) if f not in ("--help", "--run")}
    assert "--epochs" in flags or "--run-dir" in flags
    for flag in sorted(flags):
        args = get_args_parser().parse_args(["--nproc-per-node=1", "-m", f"experiments.{script}", flag, "1"])
        assert args.training_script_args == [flag, "1"], flag
    if script == "fit_directions":
        from experiments.fit_directions import FitScript

        assert parse_config(FitScript, ["--run-dir", "runs/001-x"]).run == "runs/001-x"


def test_help_lists_the_allowed_values_and_says_none_where_none_means_not_given():
    from benchmarks import BenchmarkConfig
    from experiments.edit_faces import EditConfig
    from experiments.evaluate import EvaluateScript
    from models.vae import LIKELIHOODS
    from pipeline.cli import config_parser
    from pipeline.training import TrainConfig

    edit = config_parser(EditConfig).format_help()
    assert "--mode {offset,target}" in edit and "--method {picked,mean,balanced,probe," in edit
    assert "probe+hair_subspace" in edit
    for flag in ("--image S", "--index S", "--eyes S", "--out S"):
        line = next(line for line in edit.splitlines() if line.strip().startswith(flag))
        assert line.endswith("(default: none)"), line
    train = " ".join(config_parser(TrainConfig).format_help().split())  # help text rewrapped onto one line
    for shown in (f"--likelihood {{{','.join(LIKELIHOODS)}}}", "--norm {none,group}", "--output {tanh,linear}",
                  "--compile {auto,on,off}", "from its checkpoint (default: none)"):
        assert shown in train, shown
    assert "--flip-rules {auto,stgan}" in config_parser(EvaluateScript).format_help()
    bench = config_parser(BenchmarkConfig).format_help()
    assert "--decode-workers N" in bench and "--encode-batch N" in bench  # the words the README uses
    assert not {"--workers", "--encode-batch-size"} & set(re.findall(r"--[a-z-]+\b", bench))


def test_fit_directions_says_what_it_left_out_once(tmp_path, capsys):
    from conftest import write_tiny_cache
    from test_artifact import make_run

    from attributes.fit import FitConfig
    from experiments.fit_directions import FitScript, main
    from pipeline.cli import run_script

    run = make_run(tmp_path / "runs", write_tiny_cache(tmp_path / "cache"))
    fit = FitConfig(min_count=20, methods=("mean", "balanced", "probe", "regression"), probe_jobs=1)
    assert run_script("fit_directions", main, FitScript(run=str(run), encode_batch=48, fit=fit)) == run
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert text.count("left out") == 1 and "fit_directions: warning: left out" in captured.err
    assert "Eyeglasses (" in text and "also left out" not in text  # every kind left out the same
