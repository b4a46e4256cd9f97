"""`nemgan train`: run folders are never touched without --resume/--force; --dry-run uses a temporary one;
--preset layers under the options."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_dry_run_without_out_uses_a_fresh_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run folder would be tmp_path/runs/mnist
    outs = []
    for _ in range(2):
        r = run("train", "--dry-run", "--no-progress")
        assert r.exit_code == 0, r.output
        out = Path(json.loads(r.output[r.output.index("{"):])["out_dir"])
        assert out.resolve().is_relative_to(Path(tempfile.gettempdir()).resolve()) and (out / "last.pt").is_file()
        outs.append(out)
    assert outs[0] != outs[1]
    assert not (tmp_path / "runs").exists()


def test_existing_run_is_refused_unless_resume_or_force(tmp_path):
    out = tmp_path / "run"
    assert run("train", "--dry-run", "--no-progress", "--out", out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.glob("*.pt")}
    for extra in ([], ["--steps", "5"]):  # a dry run, and what would be a real run, into the same folder
        r = run("train", "--dry-run", "--no-progress", "--out", out, *extra)
        assert r.exit_code == 2 and "already holds a run" in r.output and "--resume" in r.output
    r = runner.invoke(app, ["train", "--out", str(out), "--steps", "5", "--no-progress"])  # not a dry run
    assert r.exit_code == 2 and "already holds a run" in r.output
    assert {p.name: p.read_bytes() for p in out.glob("*.pt")} == before  # untouched
    r = run("train", "--dry-run", "--no-progress", "--out", out, "--resume", "--force")
    assert r.exit_code == 2 and "one of them" in r.output
    (out / "samples" / "stale.png").write_bytes(b"x")
    r = run("train", "--dry-run", "--no-progress", "--out", out, "--force")
    assert r.exit_code == 0, r.output
    assert not (out / "samples" / "stale.png").exists()  # replaced: the old run's files are gone
    assert len((out / "stats.jsonl").read_text().splitlines()) == 1  # one fresh run's log, not appended
    r = run("train", "--dry-run", "--no-progress", "--out", out, "--resume")
    assert r.exit_code == 0, r.output


def test_preset_layers_under_options_and_set(tmp_path):
    from training.config import preset

    name = "mnist-unsup"
    want = preset(name)
    r = run("train", "--preset", name, "--dry-run", "--no-progress", "--out", tmp_path / "p",
            "--batch-size", 32, "--set", "consistency_temp=0.25")
    assert r.exit_code == 0, r.output
    opts = json.loads((tmp_path / "p" / "options.json").read_text())
    assert opts["im_weight"] == want["im_weight"] and opts["consistency_weight"] == want["consistency_weight"]
    assert opts["batch_size"] == 32 and want.get("batch_size", 64) != 32  # the options win
    assert opts["consistency_temp"] == 0.25 != want["consistency_temp"]
    r = run("train", "--preset", "no-such-preset", "--dry-run", "--out", tmp_path / "q")
    assert r.exit_code == 2 and "unknown preset" in r.output and name in r.output


def test_resume_takes_the_runs_own_options(tmp_path):
    """The README's pair: a run with its own options, then `--out R --steps N --resume` with none of them."""
    out = tmp_path / "run"
    r = run("train", "--dry-run", "--no-progress", "--out", out, "--steps", 2, "--labeled-fraction", 0.05,
            "--set", "lr_d=2e-4")
    assert r.exit_code == 0, r.output
    r = run("train", "--out", out, "--steps", 3, "--resume", "--no-progress")  # no --dry-run either
    assert r.exit_code == 0, r.output
    opts = json.loads((out / "options.json").read_text())
    assert opts["steps"] == 3 and opts["lr_d"] == 2e-4 and opts["labeled_fraction"] == 0.05 and opts["dry_run"]
    assert json.loads((out / "stats.jsonl").read_text().splitlines()[-1])["step"] == 3
    # told otherwise: an option that changes what is trained is still refused, naming it
    r = run("train", "--out", out, "--steps", 4, "--resume", "--no-progress", "--set", "lr_d=1e-3")
    assert r.exit_code == 2 and "different options (lr_d)" in r.output


def test_set_errors_are_one_line_write_nothing_and_suggest(tmp_path):
    out = tmp_path / "never"
    for item, fragments in [("lr_d=abc", ("lr_d", "expects a number")),
                            ("c2=1", ("c2", "true or false")),
                            ("classes=[1, \"a\"]", ("classes", "list[int]")),
                            ("lr_dd=2e-4", ("unknown option 'lr_dd'", "did you mean 'lr_d'")),
                            ("stepz=3", ("did you mean 'steps'",))]:
        r = run("train", "--out", out, "--set", item, "--no-progress")  # a real run, not a dry run
        assert r.exit_code == 2, (item, r.output)
        assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output, r.output
        for f in fragments:
            assert f in r.output, (item, r.output)
    assert not out.exists()
    # a check only the training loop can make (priors vs the data's modes): the folder it made is removed
    r = run("train", "--dry-run", "--out", out, "--set", "priors=[0.5, 0.5]", "--no-progress")
    assert r.exit_code == 2 and "priors" in r.output
    assert not out.exists()
