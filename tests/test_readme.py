"""Every command the README shows is run by a test.

The README's commands are collected from its ``bash`` blocks and from inline code that starts
with ``make``, ``papermill``, ``python -m`` or ``.venv/bin/``. Each must appear in
:data:`HOW_TESTED`, which says which test runs it and how; a new command in the README fails
here until it is added there with its test. Cheap commands run verbatim below (in a temporary
run directory where they would write into the repository); the long ones (the default pipeline,
the full sweep) run under the smoke profile in the tests named.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from egmlib.core import params

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent

#: README command -> the test that runs it (this file unless named).
HOW_TESTED: dict[str, str] = {
    "make reproduce": "test_make_targets_run_the_documented_modules (recipe); the same "
                      "pipeline under the smoke profile: tests/test_notebooks.py smoke_run",
    "make test": "CI runs it (.ci/run)",
    "make sweep": "test_make_targets_run_the_documented_modules (recipe); the sweep CLI on a "
                  "smoke grid: tests/test_sweep.py test_cli_runs_the_profile_grid",
    "make bench": "test_make_targets_run_the_documented_modules; the module itself: "
                  "test_bench_writes_its_record",
    "python -m benchmarks.run --out results/bench/bench.json":
        "test_bench_writes_its_record (one quick section, into a temporary file)",
    "make nbval": "test_make_targets_run_the_documented_modules",
    "make nbval ANY_MACHINE=1": "test_make_targets_run_the_documented_modules (recipe without "
                                "the machine check)",
    "python -m egmlib.workflow.records --same-machine results/default":
        "tests/test_records.py test_same_machine_command_on_the_committed_records (its main, on "
        "the committed folder)",
    "make studies": "test_make_targets_run_the_documented_modules (recipe); the study CLI on the "
                    "smoke run, one epoch a row: tests/test_studies.py",
    "python -m egmlib.workflow.studies --study budget":
        "tests/test_studies.py test_cli_writes_the_budget_record (smoke run, two epochs a row)",
    "python -m egmlib.workflow.studies --study precision":
        "tests/test_studies.py test_cli_writes_the_precision_record (smoke run, one epoch a row)",
    "python -m egmlib.workflow.studies --study af_rate":
        "tests/test_studies.py test_cli_writes_the_af_rate_record (smoke run, one epoch a row)",
    "python -m egmlib.workflow.studies --study af_decoder":
        "tests/test_studies.py test_cli_writes_the_af_rate_record[af_decoder-...] (smoke run, "
        "one epoch a row)",
    "python -m egmlib.workflow.studies --study af_latent":
        "tests/test_studies.py test_cli_writes_the_af_rate_record[af_latent-...] (smoke run, "
        "one epoch a row)",
    "python -m egmlib.workflow.studies --study recon_speed":
        "tests/test_studies.py test_cli_writes_the_recon_speed_record (smoke run, the rows "
        "shrunk to two epochs and to all and 2 real simulations per rhythm)",
    "python -m benchmarks.run --only scores --out results/bench/bench_scores.json":
        "test_bench_scores_section_compares_before_and_after (the same section in quick mode, "
        "into a temporary file)",
    "python -m egmlib.workflow.studies --study recon_precision":
        "tests/test_studies.py test_cli_writes_the_recon_precision_record (smoke run, two "
        "epochs a row)",
    "make clean": "test_make_targets_run_the_documented_modules",
    "make site": "test_make_targets_run_the_documented_modules (recipe); the same build, opened "
                 "page by page in headless Chromium: tests/test_site.py",
    ".venv/bin/python -m egmlib.workflow.pipeline --profile smoke":
        "tests/test_notebooks.py smoke_run (the same CLI, into a temporary run directory)",
    ".venv/bin/python -m egmlib.workflow.pipeline --profile default --in-place":
        "what make reproduce runs: test_make_targets_run_the_documented_modules",
    ".venv/bin/python -m egmlib.workflow.pipeline --profile ct_biatrial":
        "what make reproduce runs second: test_make_targets_run_the_documented_modules; the same "
        "chain at smoke sizes: tests/test_notebooks.py "
        "test_the_chain_runs_unchanged_on_the_ct_anatomy",
    ".venv/bin/python -m egmlib.workflow.pipeline --profile smoke -p anatomy ct_biatrial":
        "tests/test_notebooks.py test_the_chain_runs_unchanged_on_the_ct_anatomy (the same CLI "
        "plus -p n_rec 64 and --only 01_data,02_vae_s,05_augment, into a temporary run "
        "directory)",
    ".venv/bin/papermill notebooks/05_augment.ipynb out.ipynb -f params/smoke.yaml -p k 2":
        "tests/test_notebooks.py test_05_papermill_cli_single_run (verbatim, on the smoke run, "
        "plus its run_dir and an out_dir)",
    "papermill notebooks/05_augment.ipynb out.ipynb -p k 18":
        "tests/test_notebooks.py test_05_papermill_cli_single_run (on the smoke run's data, "
        "with its profile and a k its generators kept)",
    "papermill --help-notebook notebooks/01_data.ipynb": "test_help_notebook_lists_parameters",
    "python -m egmlib.workflow.sweep --profile P":
        "tests/test_sweep.py test_cli_runs_the_profile_grid (P = smoke)",
    "python -m egmlib.workflow.studies --study gen_mode":
        "tests/test_studies.py test_cli_writes_the_generation_mode_record (smoke run, 12 "
        "windows a set)",
    "python -m egmlib.workflow.ablation --profile default":
        "tests/test_ablation.py test_cli_runs_the_ablation_and_07_writes_its_record (the smoke "
        "profile's ablation on the smoke run, then notebook 07_filter)",
    "python -m egmlib.workflow.records results/default results/cross_machine/amd_epyc_avx2 "
    "01_data 02_vae_s --out results/cross_machine/comparison.json":
        "test_cross_machine_comparison_is_remade_from_the_committed_records (verbatim, into a "
        "temporary file, which must equal the committed one)",
    "python -m egmlib.workflow.sweep --profile default --generator vae_s --restrict "
    "n_real_sims=8,16 --restrict k=0,18":
        "tests/test_sweep.py test_the_readme_part_of_the_default_study_plans_80_runs (the plan "
        "on the default grid; the CLI's restriction on the smoke grid, dry run)",
    "python -m egmlib.workflow.studies --study linear":
        "tests/test_studies.py test_cli_writes_the_linear_correction_record (the smoke run, the "
        "smoke sweep's arms and seeds)",
    "python -m egmlib.workflow.studies --study unseen":
        "tests/test_studies.py test_cli_writes_the_unseen_window_record (the smoke run, the "
        "smoke sweep's scarcest arm, non-zero k and seeds)",
    "python -m egmlib.workflow.studies --study residual":
        "tests/test_studies.py test_cli_writes_the_residual_record (the smoke run, the smoke "
        "sweep's scarcest arm, largest range k and seeds, three epochs)",
    "python -m egmlib.workflow.studies --study residual_full":
        "tests/test_studies.py test_cli_writes_the_residual_full_record (the smoke run, every "
        "training simulation, the smoke sweep's seeds, two epochs)",
    "python -m egmlib.workflow.quoted README.md notebooks/*.ipynb":
        "tests/test_quoted.py test_the_committed_prose_agrees_with_the_committed_records (the "
        "same check per file, in-process; the CLI itself: test_cli_checks_and_writes_in_place)",
    "python -m egmlib.workflow.quoted README.md notebooks/*.ipynb --write":
        "tests/test_quoted.py test_cli_checks_and_writes_in_place and "
        "test_cli_rewrites_a_notebooks_markdown (on copies; make reproduce and make sweep run "
        "it last: test_make_targets_run_the_documented_modules)",
    "python -m egmlib.workflow.results results/prior_draws/06_sweep.json "
    "results/cross_machine/amd_epyc_avx2/06_sweep.json --out "
    "results/cross_machine/06_sweep_comparison.json":
        "test_study_comparison_is_remade_from_the_committed_records[cross_machine] (verbatim, "
        "into a temporary file, which must equal the committed one)",
    "python -m egmlib.workflow.results results/prior_draws/06_sweep.json "
    "results/default/06_sweep.json --out results/prior_draws/06_sweep_comparison.json":
        "test_study_comparison_is_remade_from_the_committed_records[prior_draws] (verbatim, "
        "into a temporary file, which must equal the committed one)",
    "python -m egmlib.workflow.results results/prior_draws/07_filter.json "
    "results/default/07_filter.json --out results/prior_draws/07_filter_comparison.json":
        "test_filter_ablation_comparison_is_remade_from_the_committed_records (verbatim, into a "
        "temporary file, which must equal the committed one)",
    "python -m egmlib.workflow.studies --study residual_vae":
        "tests/test_studies.py test_cli_residual_vae_reads_the_residual_studys_rate (the smoke "
        "run, the smoke generators, two epochs)",
    "python -m egmlib.workflow.studies --study residual_confirm":
        "tests/test_studies.py test_cli_residual_confirm_replicates_the_exploratory_record_on_"
        "new_seeds (the smoke run, VAE-C's smoke windows, two epochs)",
    "python -m egmlib.workflow.studies --study residual_ideal":
        "tests/test_studies.py test_cli_residual_confirm_replicates_the_exploratory_record_on_"
        "new_seeds (after the confirmation, on its smoke record, two epochs)",
}

_PREFIXES = ("make ", "papermill ", "python -m ", ".venv/bin/")


def readme_commands(text: str) -> list[str]:
    """Commands shown in a README: lines of ``bash`` blocks (comments stripped) and inline code
    spans that start with one of the command prefixes."""
    found: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                found.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`\n]+)`", prose):
        if span.startswith(_PREFIXES):
            found.append(span.strip())
    return list(dict.fromkeys(re.sub(r"\s+", " ", c) for c in found))


def test_readme_commands_are_all_tested():
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert "make test" in commands and len(commands) >= 8  # the parser sees the README
    untested = [c for c in commands if re.sub(r"\s+", " ", c) not in HOW_TESTED]
    assert untested == [], f"README commands with no test: {untested}; add each to HOW_TESTED"


def test_the_parser_finds_blocks_and_spans():
    text = "x\n```bash\nmake a   # note\n\npapermill b.ipynb o.ipynb\n```\nrun `make c` or " \
           "`python -m m --x`, not `n_rec`.\n```python\nmake_d()\n```\n"
    assert readme_commands(text) == ["make a", "papermill b.ipynb o.ipynb", "make c",
                                     "python -m m --x"]


def _help_notebook(notebook: str) -> str:
    """What ``papermill --help-notebook notebooks/<notebook>.ipynb`` prints: for 01_data (the
    README's command) through papermill's executable, for the others through the same click
    command in this process (the same output, without starting papermill six more times)."""
    if notebook == "01_data":
        return subprocess.run([str(BIN / "papermill"), "--help-notebook",
                               f"notebooks/{notebook}.ipynb"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout
    from click.testing import CliRunner
    from papermill.cli import papermill as papermill_cli

    result = CliRunner().invoke(papermill_cli, ["--help-notebook",
                                                str(ROOT / "notebooks" / f"{notebook}.ipynb")])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("notebook", sorted(params.NOTEBOOKS))
def test_help_notebook_lists_parameters(notebook: str):
    """``papermill --help-notebook`` lists every parameter with its type, default and help."""
    out = _help_notebook(notebook)
    defaults = params.defaults(notebook)
    for name in params.NOTEBOOKS[notebook]:
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(f"{name}:")), None)
        assert line is not None, f"{notebook}: {name} not listed"
        assert f"(default {defaults[name]!r})" in line, line
        assert params.SPECS[name].help[:30] in " ".join(out.split()), f"{name}: help missing"


def _make_recipe(target: str) -> str:
    return subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_targets_run_the_documented_modules():
    assert "-m egmlib.workflow.pipeline --profile default --in-place" in _make_recipe("reproduce")
    assert "-m egmlib.workflow.pipeline --profile ct_biatrial" in _make_recipe("reproduce")
    assert "-m egmlib.workflow.sweep --profile default" in _make_recipe("sweep")
    for name in ("reproduce", "sweep"):  # the README's numbers follow the records they rewrite
        lines = [line for line in _make_recipe(name).splitlines()
                 if not line.startswith("make")]  # a nested make prints its directory
        assert lines[-1].endswith("-m egmlib.workflow.quoted README.md notebooks/*.ipynb --write")
    assert "-m benchmarks.run" in _make_recipe("bench")
    assert "-m egmlib.workflow.studies --profile default" in _make_recipe("studies")
    assert "--nbval-lax" in _make_recipe("nbval")
    # make nbval first checks the machine's kind, unless asked not to
    assert "-m egmlib.workflow.records --same-machine results/default" in _make_recipe("nbval")
    assert "--same-machine" not in subprocess.run(
        ["make", "-n", "nbval", "ANY_MACHINE=1"], cwd=ROOT, capture_output=True, text=True,
        check=True).stdout
    assert "rm -rf runs" in _make_recipe("clean")
    assert "-m egmlib.workflow.site" in _make_recipe("site")
    assert "pytest tests" in _make_recipe("test")
    for name in ("reproduce", "sweep", "bench", "nbval", "clean", "test", "studies", "site"):
        assert f"make {name}" in HOW_TESTED


def test_bench_writes_its_record(tmp_path: Path, capsys):
    """``python -m benchmarks.run --out FILE`` writes the figures with the conditions they were
    measured under (here one quick section, the transfer matrix at n_rec 256)."""
    import json

    from benchmarks import run as bench

    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--only", "transfer", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert {"machine", "created_utc", "git_commit", "versions", "threads"} <= set(record)
    assert "cores" in record["machine"]
    (row,) = record["rows"]
    assert row["section"] == "transfer" and row["n_rec"] == 256 and row["ratio"] == 1.0
    assert row["shape"] == [row["n_torso_vertices"], 256]  # torso vertices x recording sites


def test_bench_scores_section_compares_before_and_after(tmp_path: Path):
    """The scores section times each fixed cost before and after in the same run, as ratios
    to the before row."""
    import json

    from benchmarks import run as bench

    out = tmp_path / "bench_scores.json"
    assert bench.main(["--quick", "--only", "scores", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["section"] for r in rows] == ["scores"] * 4
    assert [r["ratio"] for r in rows[::2]] == [1.0, 1.0]  # the baselines
    assert all(r["seconds"] > 0 for r in rows)
    assert rows[1]["ratio"] == rows[0]["seconds"] / rows[1]["seconds"]


def test_licence_and_citation_agree_with_the_package():
    """LICENSE and CITATION.cff exist, and say what pyproject.toml says (version, licence); the
    citation names the paper the repository reproduces."""
    import tomllib

    import yaml

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (ROOT / "LICENSE").read_text().startswith(f"{project['license']['text']} License")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["version"] == project["version"] and cff["license"] == project["license"]["text"]
    assert all(a.get("name") or a.get("family-names") for a in cff["authors"])
    ids = [i["value"] for r in cff["references"] for i in r.get("identifiers", [])]
    assert "arXiv:2512.14537" in ids


def test_cross_machine_comparison_is_remade_from_the_committed_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    """The README's cross-processor numbers come from results/cross_machine/comparison.json; the
    command remakes it from the committed records. When results/default/01-02 are remade, this
    fails until the comparison (and the README's sentence) is made again on the other machine.
    VAE-C's AMD record is of the vector code, compared with results/vector_code/ in the text."""
    import json

    from egmlib.workflow.records import main

    monkeypatch.chdir(ROOT)
    out = tmp_path / "comparison.json"
    assert main(["results/default", "results/cross_machine/amd_epyc_avx2", "01_data",
                 "02_vae_s", "--out", str(out)]) == 0
    committed = json.loads((ROOT / "results/cross_machine/comparison.json").read_text())
    assert json.loads(out.read_text()) == committed
    assert "01_data: 59 of 89 numbers equal" in capsys.readouterr().out


@pytest.mark.parametrize(("folder", "other", "line"), [
    ("cross_machine", "results/cross_machine/amd_epyc_avx2/06_sweep.json",
     "+0.025 (+0.011 to +0.039) against +0.016 (+0.001 to +0.030)"),
    ("prior_draws", "results/default/06_sweep.json",
     "+0.025 (+0.011 to +0.039) against +0.017 (+0.002 to +0.032)"),
], ids=["cross_machine", "prior_draws"])
def test_study_comparison_is_remade_from_the_committed_records(
        folder: str, other: str, line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys):
    """The README's numbers of the study on another processor, and of the committed study
    against its earlier record with the prior's windows, come from
    results/<folder>/06_sweep_comparison.json, remade here from two committed study records,
    each against the Intel study with the prior's windows (results/prior_draws/, the draw mode
    of the AMD runs); the primary decision of each is what the README says (a gain in all)."""
    import json

    from egmlib.workflow import results

    monkeypatch.chdir(ROOT)
    out = tmp_path / "comparison.json"
    assert results.main(["results/prior_draws/06_sweep.json", other, "--out", str(out)]) == 0
    committed = json.loads((ROOT / "results" / folder / "06_sweep_comparison.json").read_text())
    assert json.loads(out.read_text()) == committed
    assert line in capsys.readouterr().out
    primary = [c for c in committed["comparisons"] if c["a"]["role"] == "primary"]
    assert [(c["a"]["decision"], c["b"]["decision"]) for c in primary] == [("gain", "gain")]


def test_filter_ablation_comparison_is_remade_from_the_committed_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    """The README's comparison of the filter ablation with the prior's windows and with the
    guided ones comes from results/prior_draws/07_filter_comparison.json, remade here from the
    two committed records: a line per filter, k and rhythm against k = 0 (12), the unfiltered
    k = 6 line as the README reads it."""
    import json

    from egmlib.workflow import results

    monkeypatch.chdir(ROOT)
    out = tmp_path / "comparison.json"
    assert results.main(["results/prior_draws/07_filter.json", "results/default/07_filter.json",
                         "--out", str(out)]) == 0
    committed = json.loads((ROOT / "results/prior_draws/07_filter_comparison.json").read_text())
    assert json.loads(out.read_text()) == committed
    assert len(committed["comparisons"]) == 12
    assert {c["a"]["role"] for c in committed["comparisons"]} == {"filter"}
    assert ("vae_s SR k = 6, 8 real simulations per rhythm, filter_pool 6: +0.009 (-0.015 to "
            "+0.030) against +0.026 (+0.011 to +0.043); paired by seed, b - a +0.017"
            in capsys.readouterr().out)


def test_the_confirmation_is_remade_from_its_committed_rows_and_read_as_decided():
    """results/default/recon_residual_confirm.json: its design is the one the committed
    exploratory record (recon_residual_vae.json) gives; its primary row, decision and combined
    row are recomputed here from the committed fits (bootstrap included, same seed); the
    README's sentence on it names the decision the record holds."""
    import json

    from egmlib.workflow import results, studies

    res = ROOT / "results" / "default"
    record = json.loads((res / "recon_residual_confirm.json").read_text())
    exploratory = json.loads((res / "recon_residual_vae.json").read_text())
    assert record["design"] == studies.confirmation_design(exploratory)
    design = record["design"]
    key = studies.RESIDUAL_FORMS[design["form"]][1]
    assert sorted({r["seed"] for r in record["rows"]}) == design["seeds"]
    assert not set(design["seeds"]) & set(exploratory["seeds"])
    primary = results.gain_row([{**r, "test": r[key]} for r in record["rows"]], [design["k"]],
                               design["rhythm"])
    assert {k: record["primary"][k] for k in primary} == primary
    assert record["primary"]["decision"] == results.decide(primary, design["alpha"])
    both = [r for r in exploratory["rows"] + record["rows"]
            if r["generator"] in ("none", design["generator"])]
    combined = results.gain_row([{**r, "test": r[key]} for r in both], [design["k"]],
                                design["rhythm"])
    assert {k: record["combined"][k] for k in combined} == combined
    words = {"gain": "confirmed: a gain", "loss": "a loss",
             "no change": "not confirmed: no change detected"}
    assert f"Decision: {words[record['primary']['decision']]}" in README.read_text()


def test_the_ideal_windows_follow_up_is_remade_from_the_committed_fits():
    """results/default/recon_residual_ideal.json: its seeds, arm and k are the confirmation's;
    every gain of ideal windows over k = 0, and of VAE-C over ideal windows, is recomputed here
    from the two committed records' fits (bootstrap included) and equals the record's."""
    import json

    from egmlib.workflow import results, studies

    res = ROOT / "results" / "default"
    ideal = json.loads((res / "recon_residual_ideal.json").read_text())
    confirm = json.loads((res / "recon_residual_confirm.json").read_text())
    assert (ideal["seeds"], ideal["n_real_sims"], ideal["k"]) == (
        confirm["design"]["seeds"], confirm["design"]["n_real_sims"], confirm["design"]["k"])
    assert ideal["config"] == confirm["config"]
    fits = {(r["generator"], r["seed"]): r for r in confirm["rows"] + ideal["rows"]}
    for family, (after, before) in (("gains", (studies.IDEAL_SOURCE, "none")),
                                    ("generator_vs_ideal", ("vae_c", studies.IDEAL_SOURCE))):
        for g in ideal[family]:
            key = studies.RESIDUAL_FORMS[g["form"]][1]
            runs = [{**fits[(name, s)], "k": k, "test": fits[(name, s)][key]}
                    for s in ideal["seeds"] for name, k in ((before, 0), (after, ideal["k"]))]
            want = results.gain_row(runs, [ideal["k"]], g["rhythm"])
            assert {k: g[k] for k in want} == want, (family, g["form"], g["rhythm"])
