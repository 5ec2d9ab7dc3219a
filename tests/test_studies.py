"""The generators' choice study (egmlib.workflow.studies): every row is scored on the validation
split, the test split is never read, and a bad row fails before anything trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from egmlib import data
from egmlib.core import params
from egmlib.generators.train import resolve_precision
from egmlib.workflow import studies

ROOT = Path(__file__).resolve().parents[1]


def _smoke_values(run_dir: Path) -> dict:
    return {**params.load_profile(ROOT / "params" / "smoke.yaml"), "run_dir": str(run_dir)}


def _forbid_test_split(ds, monkeypatch: pytest.MonkeyPatch, study: str) -> list[str]:
    """Make ``ds.part("test")`` raise (naming ``study``); returns the list of parts asked for."""
    part = ds.part
    asked: list[str] = []

    def guarded(name: str, rhythm: str | None = None):
        asked.append(name)
        if name == "test":
            raise AssertionError(f"the {study} read the test split")
        return part(name, rhythm)

    monkeypatch.setattr(ds, "part", guarded)
    return asked


def test_the_study_never_reads_the_test_split(smoke_run: Path, monkeypatch: pytest.MonkeyPatch):
    ds = data.load_dataset(smoke_run)
    asked = _forbid_test_split(ds, monkeypatch, "choice study")
    rows = [r for r in studies.CHOICES if r[2] in ({}, {"site_order": "fps"})]
    study = studies.choice_study(ds, _smoke_values(smoke_run), rows,
                                 epochs={"vae_s": 1, "vae_c": 1})
    assert "val" in asked and "test" not in asked
    assert study["split"] == "val" and study["epochs"] == {"vae_c": 1, "vae_s": 1}
    by = {(r["generator"], r["site_order"]): r for r in study["rows"]}
    # the chain order puts neighbouring sites in neighbouring columns, farthest-point sampling not
    assert by[("vae_s", "chain")]["column_step_mm"] < by[("vae_s", "fps")]["column_step_mm"]
    for row in study["rows"]:
        for rhythm, m in row["val"].items():
            assert -1.0 <= m["corr_mean"] <= 1.0 and m["lsd_mean"] > 0, rhythm
    vae_c = by[("vae_c", "chain")]
    assert set(vae_c["df_hz"]) == set(data.LABELS)
    for d in vae_c["df_hz"].values():
        assert d["abs_diff"] == pytest.approx(abs(d["generated_median"] - d["val_median"]))
    assert 0 <= vae_c["af_collapse"]["active_units"] <= vae_c["af_collapse"]["latent"]


def test_a_row_is_reproducible(smoke_run: Path):
    ds = data.load_dataset(smoke_run)
    base = studies._base("vae_s", _smoke_values(smoke_run))
    a = studies.choice_row(ds, "vae_s", base, {"init": "torch"}, epochs=1)
    b = studies.choice_row(ds, "vae_s", base, {"init": "torch"}, epochs=1)
    assert a["val"] == b["val"] and a["best_epoch"] == b["best_epoch"]


def test_bad_rows_fail_before_training(smoke_run: Path):
    ds = data.load_dataset(smoke_run)
    values = _smoke_values(smoke_run)
    good = ("vae_s", "defaults", {})
    with pytest.raises(ValueError, match="unknown setting 'learning_rate'"):
        studies.choice_study(ds, values, [good, ("vae_s", "typo", {"learning_rate": 1e-3})])
    with pytest.raises(ValueError, match="unknown generator 'vae_x'"):
        studies.choice_study(ds, values, [good, ("vae_x", "no such model", {})])
    with pytest.raises(ValueError, match="lr"):  # a changed setting is checked like any other
        studies.choice_row(ds, "vae_s", studies._base("vae_s", values), {"lr": -1.0}, epochs=1)


def test_cli_writes_the_record(smoke_run: Path, capsys: pytest.CaptureFixture):
    assert studies.main(["--profile", "smoke", "--run-dir", str(smoke_run), "--only", "vae_c",
                         "--epochs", "1", "--study", "generators"]) == 0
    record = json.loads((smoke_run / "results" / "generator_choices.json").read_text())
    labels = [r["label"] for r in record["rows"]]
    assert labels == [r[1] for r in studies.CHOICES if r[0] == "vae_c"]
    assert record["provenance"]["params"]["profile"] == "smoke"
    assert np.isfinite(record["rows"][0]["val"]["AF"]["corr_mean"])
    assert "validation correlation" in capsys.readouterr().out


def test_the_recon_study_never_reads_the_test_split(smoke_run: Path,
                                                    monkeypatch: pytest.MonkeyPatch):
    ds = data.load_dataset(smoke_run)
    _forbid_test_split(ds, monkeypatch, "reconstruction study")
    rows = studies.RECON_CHOICES[:2]
    study = studies.recon_choice_study(ds, _smoke_values(smoke_run), rows, seeds=(0,),
                                       epochs=2)
    assert study["split"] == "val" and len(study["rows"]) == 2
    for row in study["rows"]:
        assert len(row["val_corr"]) == len(row["val_total"]) == 2  # no early stop
        assert len(row["rules"]) == len(studies.STOPPING_RULES)
        for rule in row["rules"]:
            assert rule["val_corr"] == row["val_corr"][rule["best_epoch"]]
    assert study["choice"]["label"] in {r[0] for r in rows}


def _row(label: str, seed: int, corr: list[float], rules: list[tuple[int, int, float]]) -> dict:
    """A hand-made study row: rules as (epochs_run, best_epoch, val_corr)."""
    return {"label": label, "settings": {"w_corr": 1.0}, "seed": seed, "val_corr": corr,
            "rules": [{"epochs_run": e, "best_epoch": b, "val_corr": c} for e, b, c in rules]}


def test_choose_recon_hand_worked(monkeypatch: pytest.MonkeyPatch):
    """Row B wins on the longest rule (mean 0.45 against 0.40); its shortest rule within 0.01
    of the longest on every seed is the second (rule 0 is 0.02 short on seed 1)."""
    monkeypatch.setattr(studies, "STOPPING_RULES", ((0, 2), (5, 2), (9, 1)))
    rows = [_row("A", 0, [], [(3, 1, 0.30), (6, 4, 0.39), (9, 8, 0.40)]),
            _row("A", 1, [], [(3, 1, 0.30), (6, 4, 0.39), (9, 8, 0.40)]),
            _row("B", 0, [], [(3, 1, 0.445), (6, 4, 0.445), (9, 8, 0.45)]),
            _row("B", 1, [], [(3, 1, 0.43), (7, 5, 0.445), (9, 8, 0.45)])]
    c = studies.choose_recon(rows)
    assert c["label"] == "B" and c["rule"] == {"min_epochs": 5, "patience": 2}
    assert c["val_corr"] == pytest.approx(0.445) and c["longest_val_corr"] == pytest.approx(0.45)
    assert c["epochs_run"] == [6, 7]


def test_bad_recon_rows_fail_before_training(smoke_run: Path):
    ds = data.load_dataset(smoke_run)
    with pytest.raises(ValueError, match="unknown setting 'w_kl'"):
        studies.recon_choice_study(ds, _smoke_values(smoke_run),
                                   [("ok", {"w_corr": 1.0}), ("typo", {"w_kl": 1.0})])


def test_the_recon_defaults_are_the_committed_choice():
    """The reconstruction network's defaults are what its committed choice study chose."""
    from egmlib.augmentation.recon import ReconConfig

    record = json.loads((ROOT / "results" / "default" / "recon_choices.json").read_text())
    assert record["split"] == "val"
    choice = record["choice"]
    assert choice == studies.choose_recon(record["rows"])  # the rule, re-applied
    cfg = ReconConfig()
    assert (cfg.w_corr, cfg.beta) == (choice["settings"]["w_corr"], choice["settings"]["beta"])
    p = params.validate("05_augment", {})
    assert p.recon_lr == choice["settings"].get("lr", 2e-3)
    assert (p.recon_min_epochs, p.recon_patience) == (choice["rule"]["min_epochs"],
                                                       choice["rule"]["patience"])
    assert p.recon_epochs == record["epochs"]


def test_plateau_gain_hand_worked():
    # still falling: the last quarter (1 value) gains (2 - 1) / 2 on the best before it
    assert studies.plateau_gain([4.0, 3.0, 2.0, 1.0]) == pytest.approx(0.5)
    # best at epoch 2, then worse: no gain (negative), a plateau
    assert studies.plateau_gain([4.0, 1.0, 1.5, 1.2]) == pytest.approx(-0.2)
    # eight epochs: the last quarter is the last two
    curve = [8.0, 6.0, 5.0, 4.5, 4.2, 4.0, 3.99, 3.98]
    assert studies.plateau_gain(curve) == pytest.approx((4.0 - 3.98) / 4.0)
    assert studies.plateau_gain(curve) < studies.PLATEAU_TOL
    for bad in ([1.0], [1.0, float("nan")], [[1.0, 2.0]]):
        with pytest.raises(ValueError, match="curve"):
            studies.plateau_gain(bad)


def test_the_budget_study_keeps_curves_on_the_validation_split(smoke_run: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    ds = data.load_dataset(smoke_run)
    _forbid_test_split(ds, monkeypatch, "budget study")
    rows = [("two epochs", {"epochs": 2}), ("two epochs, x0.5", {"epochs": 2, "lr_decay": 0.5})]
    study = studies.budget_study(ds, _smoke_values(smoke_run), rows)
    assert study["split"] == "val" and [r["label"] for r in study["rows"]] == [r[0] for r in rows]
    for row in study["rows"]:
        assert row["epochs_run"] == len(row["val_total"]) == 2
        assert 1 <= row["best_epoch"] <= 2
        assert row["best_epoch"] == int(np.argmin(row["val_total"])) + 1
        assert row["plateau_gain"] == pytest.approx(studies.plateau_gain(row["val_total"]),
                                                    abs=1e-5)
        assert row["converged"] == (row["plateau_gain"] < studies.PLATEAU_TOL)
        assert -1.0 <= row["val"]["SR"]["corr_mean"] <= 1.0
    again = studies.budget_row(ds, study["base"], rows[0][1], rows[0][0])
    assert again["val_total"] == study["rows"][0]["val_total"]  # same seed, same curve
    with pytest.raises(ValueError, match="lr_decay"):
        studies.budget_study(ds, _smoke_values(smoke_run), [("bad", {"lr_decay": 2.0})])
    with pytest.raises(ValueError, match="changes"):
        studies.budget_study(ds, _smoke_values(smoke_run), [("bad", {"optimiser": "sgd"})])


def test_cli_writes_the_budget_record(smoke_run: Path, capsys: pytest.CaptureFixture):
    assert studies.main(["--profile", "smoke", "--run-dir", str(smoke_run), "--epochs", "2",
                         "--study", "budget"]) == 0
    record = json.loads((smoke_run / "results" / "generator_budget.json").read_text())
    assert [r["label"] for r in record["rows"]] == [r[0] for r in studies.BUDGET_ROWS]
    assert all(r["epochs"] == 2 and len(r["val_total"]) == 2 for r in record["rows"])
    assert record["split"] == "val" and record["plateau_tol"] == studies.PLATEAU_TOL
    assert "last-quarter gain" in capsys.readouterr().out


def _guarded_cli_record(smoke_run: Path, monkeypatch: pytest.MonkeyPatch, study: str,
                        epochs: int, record: str) -> dict:
    """Run ``--study study`` on the smoke run with the test split made to raise; its record."""
    ds = data.load_dataset(smoke_run)
    _forbid_test_split(ds, monkeypatch, f"{study} study")
    monkeypatch.setattr(studies, "load_dataset", lambda run: ds)
    assert studies.main(["--profile", "smoke", "--run-dir", str(smoke_run), "--epochs",
                         str(epochs), "--study", study]) == 0
    return json.loads((smoke_run / "results" / f"{record}.json").read_text())


def test_cli_writes_the_precision_record(smoke_run: Path, monkeypatch: pytest.MonkeyPatch):
    record = _guarded_cli_record(smoke_run, monkeypatch, "precision", 1, "generator_precision")
    assert [(r["generator"], r["label"]) for r in record["rows"]] == [
        (g, label) for g, label, _ in studies.PRECISION_ROWS]
    assert record["rows"][0]["precision"] == "float32"
    assert record["rows"][1]["precision"] == resolve_precision("auto")
    assert record["split"] == "val" and record["epochs"] == {"vae_c": 1}
    assert all("af_collapse" in r and "df_hz" in r for r in record["rows"])


def test_cli_writes_the_recon_precision_record(smoke_run: Path,
                                               monkeypatch: pytest.MonkeyPatch):
    record = _guarded_cli_record(smoke_run, monkeypatch, "recon_precision", 2,
                                 "recon_precision")
    rows = record["rows"]
    assert [r["label"] for r in rows] == [label for label, _ in studies.RECON_PRECISION_ROWS
                                          for _ in studies.RECON_STUDY_SEEDS]
    assert {r["precision"] for r in rows if r["label"] == "float32"} == {"float32"}
    assert {r["precision"] for r in rows if r["label"] == "auto precision"} == {
        resolve_precision("auto")}
    assert all(len(r["val_corr"]) == 2 for r in rows) and record["split"] == "val"


def _speed_row(label: str, arm: int, seed: int, total: list[float], corr: list[float],
               epoch_s: float, **settings) -> dict:
    return {"label": f"{label}; arm {arm}", "seed": seed, "n_real_sims": arm,
            "settings": {**settings, "n_real_sims": arm}, "val_total": total, "val_corr": corr,
            "epoch_s": [epoch_s] * len(total)}


def test_rule_cost_replays_the_stopping_rule():
    # patience 2: the best is epoch 1, epochs 2 and 3 are worse, so 4 epochs run
    row = _speed_row("A", 0, 0, [3.0, 1.0, 2.0, 2.5, 0.5], [0.1, 0.4, 0.3, 0.2, 0.6], 1.5)
    assert studies.rule_cost(row, (0, 2)) == (0.4, 6.0)
    assert studies.rule_cost(row, (5, 2)) == (0.6, 7.5)  # no stop before 5 epochs


def test_choose_speed_hand_worked():
    """The reference R (first) is slow; F is fastest but 0.02 short in arm 16; M is within
    0.01 in both arms and faster than R: M is chosen."""
    curve = [3.0, 2.0, 1.0]
    rows = []
    for seed in (0, 1):
        rows += [_speed_row("R", 0, seed, curve, [0.1, 0.2, 0.50], 10.0, lr=1e-3),
                 _speed_row("R", 16, seed, curve, [0.1, 0.2, 0.30], 5.0, lr=1e-3),
                 _speed_row("F", 0, seed, curve, [0.1, 0.2, 0.50], 1.0, lr=3e-3),
                 _speed_row("F", 16, seed, curve, [0.1, 0.2, 0.28], 0.5, lr=3e-3),
                 _speed_row("M", 0, seed, curve, [0.1, 0.2, 0.495], 4.0, lr=2e-3),
                 _speed_row("M", 16, seed, curve, [0.1, 0.2, 0.30 - 0.005 * seed], 2.0,
                            lr=2e-3)]
    c = studies.choose_speed(rows, rule=(0, 8))
    assert c["label"] == "M" and c["settings"] == {"lr": 2e-3}
    table = {r["label"]: r for r in c["table"]}
    assert [r["label"] for r in c["table"]] == ["R", "F", "M"] and c["reference"] == "R"
    assert table["R"]["qualifies"] and not table["F"]["qualifies"]
    assert table["M"]["arms"]["16"]["val_corr"] == pytest.approx(0.2975)
    assert table["M"]["seconds"] == pytest.approx(18.0) and table["R"]["seconds"] == 45.0
    with pytest.raises(ValueError, match="rows"):
        studies.choose_speed([])


def test_the_recon_training_budget_is_the_committed_speed_choice():
    """05's schedule, learning rate and epochs are what the committed speed study chose (its
    rule re-applied to its rows); that study never trained on the test split."""
    record = json.loads((ROOT / "results" / "default" / "recon_speed.json").read_text())
    assert record["split"] == "val"
    assert [r["label"] for r in record["rows"]] == [
        label for label, _ in studies.RECON_SPEED_ROWS for _ in studies.RECON_STUDY_SEEDS]
    choice = studies.choose_speed(record["rows"])
    assert choice == record["choice"]
    p = params.validate("05_augment", {})
    s = choice["settings"]
    assert (p.recon_schedule, p.recon_lr, p.recon_precision) == (
        s.get("schedule", "constant"), s["lr"], s["precision"])
    assert p.recon_epochs == s.get("epochs", studies.RECON_STUDY_EPOCHS)
    assert (p.recon_min_epochs, p.recon_patience) == studies.SPEED_RULE


def test_cli_writes_the_recon_speed_record(smoke_run: Path, monkeypatch: pytest.MonkeyPatch):
    rows = tuple((f"{label}; arm {arm}", {**settings, "n_real_sims": arm})
                 for arm in (0, 2) for label, settings in (
                     ("constant", {"lr": 1e-3, "epochs": 2}),
                     ("cosine", {"lr": 2e-3, "epochs": 2, "schedule": "cosine"})))
    monkeypatch.setattr(studies, "RECON_SPEED_ROWS", rows)
    record = _guarded_cli_record(smoke_run, monkeypatch, "recon_speed", 2, "recon_speed")
    assert [r["n_real_sims"] for r in record["rows"]] == [0] * 4 + [2] * 4
    assert all(len(r["val_corr"]) == len(r["epoch_s"]) == 2 for r in record["rows"])
    assert record["split"] == "val" and record["choice"] == studies.choose_speed(record["rows"])
    assert [r["label"] for r in record["choice"]["table"]] == ["constant", "cosine"]


def test_choose_mode_hand_worked():
    def row(gen, mode, rhythm, frechet):
        return {"generator": gen, "mode": mode, "rhythm": rhythm,
                "distribution": {"frechet": frechet}}

    rows = [row("vae_s", "prior", "SR", 2.0), row("vae_s", "guided", "SR", 1.0),
            row("vae_c", "prior", "SR", 1.0), row("vae_c", "prior", "AF", 5.0),
            row("vae_c", "guided", "SR", 2.0), row("vae_c", "guided", "AF", 4.0),
            row("real (training)", "-", "SR", 0.1)]
    choice = studies.choose_mode(rows)
    assert set(choice) == {"vae_s", "vae_c"}  # the reference row is no candidate
    assert choice["vae_s"] == {"mode": "guided", "frechet": {"prior": 2.0, "guided": 1.0}}
    assert choice["vae_c"]["frechet"] == {"prior": 3.0, "guided": 3.0}
    assert choice["vae_c"]["mode"] == "prior"  # a tie keeps the paper's prior


def test_cli_writes_the_generation_mode_record(smoke_run: Path,
                                               monkeypatch: pytest.MonkeyPatch):
    ds = data.load_dataset(smoke_run)
    _forbid_test_split(ds, monkeypatch, "generation-mode study")
    monkeypatch.setattr(studies, "load_dataset", lambda run: ds)
    monkeypatch.setattr(studies, "MODE_STUDY_N", 12)
    assert studies.main(["--profile", "smoke", "--run-dir", str(smoke_run), "--study",
                         "gen_mode"]) == 0
    record = json.loads((smoke_run / "results" / "generator_modes.json").read_text())
    assert record["split"] == "val"
    keys = [(r["generator"], r["mode"], r["rhythm"]) for r in record["rows"]]
    assert keys == [("vae_s", "prior", "SR"), ("vae_s", "guided", "SR"),
                    ("vae_c", "prior", "SR"), ("vae_c", "guided", "SR"),
                    ("vae_c", "prior", "AF"), ("vae_c", "guided", "AF"),
                    ("real (training)", "-", "SR"), ("real (training)", "-", "AF")]
    assert all(r["n"] == 12 for r in record["rows"][:6])
    assert record["choice"] == studies.choose_mode(record["rows"])
    # real SR training windows lie nearer the validation ones than a 3-epoch VAE-S's windows
    frechet = {k: r["distribution"]["frechet"] for k, r in zip(keys, record["rows"])}
    assert frechet[("real (training)", "-", "SR")] < min(
        frechet[("vae_s", m, "SR")] for m in studies.GEN_MODES)


def test_cli_writes_the_linear_correction_record(smoke_run: Path):
    """The linear correction on every arm and seed of the smoke sweep, paired with its runs; the
    record says that no network was trained, so another processor kind may read it."""
    assert studies.main(["--profile", "smoke", "--run-dir", str(smoke_run), "--study",
                         "linear"]) == 0
    record = json.loads((smoke_run / "results" / "recon_linear.json").read_text())
    assert record["arms"] == [1, 0] and record["seeds"] == [0, 1]   # params/smoke.yaml's sweep
    assert [(r["n_real_sims"], r["seed"]) for r in record["rows"]] == [
        (1, 0), (1, 1), (0, 0), (0, 1)]
    for r in record["rows"]:
        table = r["val_corr"]
        assert r["val_corr_chosen"] == max(max(v) for v in table.values())
        assert r["weighting"] in table and r["alpha"] in r["alphas"]
    arm = record["by_arm"]["1"]
    assert arm["n_seeds"] == 2 and arm["SR"]["corr_mean_mean"] == pytest.approx(
        np.mean([r["test"]["SR"]["corr_mean"] for r in record["rows"][:2]]))
    assert "kind_independent" in record["provenance"]
    assert set(record["tikhonov_val"]) >= {"SR", "AF", "all"}


def test_unseen_study_pairs_each_source_and_k_with_the_k0_fit_of_its_seed(tmp_path: Path):
    """On the small data set of test_augment: every row is a linear correction of its arm, seed,
    source and k; each gain is the mean over seeds of the paired difference (every simulation
    has as many test windows, so the per-simulation mean is the run's)."""
    from test_augment import fake_dataset

    from egmlib.augmentation import augment
    from egmlib.workflow import results

    ds = fake_dataset(tmp_path, n_sims=9)
    ds.manifest["files"] = {"egm.npy": {"sha256": "a"}}  # the key of the cached baselines
    study = studies.unseen_study(ds, {"profile": "smoke"}, tmp_path, arms=[1], ks=[1, 3],
                                 seeds=[0, 1, 2])
    assert (study["arms"], study["ks"], study["seeds"]) == ([1], [1, 3], [0, 1, 2])
    plan = [("none", 0)] + [(s, k) for s in studies.UNSEEN_SOURCES for k in (1, 3)]
    assert [(r["generator"], r["k"], r["seed"]) for r in study["rows"]] == [
        (g, k, s) for s in (0, 1, 2) for g, k in plan]
    corr = {(r["generator"], r["k"], r["seed"]): r["test"] for r in study["rows"]}
    assert len(study["gains"]) == 4 * 2 * 2
    assert study["sources"]["unseen_sr_source"] == {"rhythms": ["SR"], "pairing": "source"}
    extra = {r["generator"]: r["n_extra_pairs"] for r in study["rows"] if r["k"] == 3}
    n_torsos = len(augment.train_torsos(ds))
    assert extra["unseen_sr"] == 0 and extra["unseen_sr_af_source"] == 3 * n_torsos
    for g in study["gains"]:
        want = np.mean([corr[(g["generator"], g["k"], s)][g["rhythm"]]["corr_mean"]
                        - corr[("none", 0, s)][g["rhythm"]]["corr_mean"] for s in (0, 1, 2)])
        assert g["mean_gain"] == pytest.approx(want, abs=1e-5), g
        assert g["n_seeds"] == 3 and g["boot_lo"] <= g["mean_gain"] <= g["boot_hi"]
    np.testing.assert_allclose([g["p_holm"] for g in study["gains"]],
                               results.holm([g["p_t"] for g in study["gains"]]))
    with pytest.raises(ValueError, match="arms: got"):
        studies.unseen_study(ds, {"profile": "smoke"}, tmp_path, arms=[0], ks=[1], seeds=[0])
    with pytest.raises(ValueError, match="ks: got"):
        studies.unseen_study(ds, {"profile": "smoke"}, tmp_path, arms=[1], ks=[0], seeds=[0])
    with pytest.raises(ValueError, match="k: got 99"):  # before any fit
        studies.unseen_study(ds, {"profile": "smoke"}, tmp_path / "none", arms=[1], ks=[99],
                             seeds=[0])
    assert not (tmp_path / "none").exists()


def test_cli_writes_the_unseen_window_record(smoke_run: Path):
    """The smoke profile's unseen-window study: its scarcest arm, its non-zero k, its seeds; no
    network trained, so the record says any processor kind may read it."""
    assert studies.main(["--profile", "smoke", "--run-dir", str(smoke_run), "--study",
                         "unseen"]) == 0
    record = json.loads((smoke_run / "results" / "recon_linear_unseen.json").read_text())
    assert (record["arms"], record["ks"], record["seeds"]) == ([1], [2, 4], [0, 1])
    assert len(record["rows"]) == 2 * (1 + 4 * 2) and len(record["gains"]) == 4 * 2 * 2
    assert "kind_independent" in record["provenance"]


def test_residual_study_chooses_its_rate_on_validation_and_pairs_every_fit_by_seed(
        tmp_path: Path):
    """On the small data set of test_augment: the learning rate with the best mean validation
    correlation on the first seeds is used everywhere (its fits are those seeds' k = 0 rows);
    the network is paired with the linear correction of the same fit, and each source's k
    windows with the k = 0 fit of the same seed, for the network and the linear correction."""
    from test_augment import fake_dataset

    from egmlib.augmentation import residual
    from egmlib.workflow import results

    ds = fake_dataset(tmp_path, n_sims=9)
    ds.manifest["files"] = {"egm.npy": {"sha256": "a"}}
    cfg = residual.ResidualConfig(hidden=4, kernel=3, max_epochs=2)
    study = studies.residual_study(ds, {"profile": "smoke"}, tmp_path, arm=1, k=3,
                                   seeds=[0, 1, 2], lrs=(1e-4, 3e-2), config=cfg)
    choice = study["lr_choice"]
    means = {lr: np.mean(v) for lr, v in choice["val_corr"].items()}
    assert choice["seeds"] == [0, 1] and f"{choice['chosen']:g}" == max(means, key=means.get)
    assert study["config"]["lr"] == choice["chosen"] and study["config"]["max_epochs"] == 2
    plan = [("none", 0)] + [(s, 3) for s in studies.RESIDUAL_SOURCES]
    assert [(r["generator"], r["k"], r["seed"]) for r in study["rows"]] == [
        (g, k, s) for s in (0, 1, 2) for g, k in plan]
    assert all(r["config"]["lr"] == choice["chosen"] for r in study["rows"])
    k0 = {r["seed"]: r for r in study["rows"] if r["k"] == 0}
    assert [k0[s]["val_corr_chosen"] for s in (0, 1)] == choice["val_corr"][
        f"{choice['chosen']:g}"]
    for rhythm, row in study["residual_vs_linear"].items():
        want = np.mean([k0[s]["test"][rhythm]["corr_mean"] - k0[s]["linear"][rhythm]["corr_mean"]
                        for s in (0, 1, 2)])
        assert row["mean_gain"] == pytest.approx(want, abs=1e-5) and row["n_seeds"] == 3
    fits = {(r["generator"], r["seed"]): r for r in study["rows"]}
    for rhythm, row in study["routed_vs_linear"].items():
        want = np.mean([k0[s]["routed"][rhythm]["corr_mean"]
                        - k0[s]["linear"][rhythm]["corr_mean"] for s in (0, 1, 2)])
        assert row["mean_gain"] == pytest.approx(want, abs=1e-5) and row["n_seeds"] == 3
    for key, family in (("test", study["gains"]), ("linear", study["linear_gains"]),
                        ("routed", study["routed_gains"])):
        assert len(family) == len(studies.RESIDUAL_SOURCES) * 2
        for g in family:
            want = np.mean([fits[(g["generator"], s)][key][g["rhythm"]]["corr_mean"]
                            - fits[("none", s)][key][g["rhythm"]]["corr_mean"] for s in (0, 1, 2)])
            assert g["mean_gain"] == pytest.approx(want, abs=1e-5), (key, g)
    for family in ("gains", "routed_gains"):  # Holm within each family of four
        np.testing.assert_allclose([g["p_holm"] for g in study[family]],
                                   results.holm([g["p_t"] for g in study[family]]))
    assert study["rounding"]["dtype"] == "float64"
    assert study["rounding"]["best_epoch"][0] == k0[0]["history"]["best_epoch"]
    for kw, message in (({"arm": 0}, "arm: got 0"), ({"k": 0}, "k: got 0"),
                        ({"lrs": ()}, "lrs: got"), ({"k": 99}, "k: got 99")):
        args = {"arm": 1, "k": 3, "seeds": [0], "config": cfg, **kw}
        with pytest.raises(ValueError, match=message):  # before any fit
            studies.residual_study(ds, {"profile": "smoke"}, tmp_path / "none", **args)
    assert not (tmp_path / "none").exists()


def test_cli_writes_the_residual_record(smoke_run: Path):
    """The smoke profile's residual study at its scarcest arm and largest range k, two seeds,
    three epochs; its record says why any processor kind may read it, with the rounding it
    measured."""
    assert studies.main(["--profile", "smoke", "--run-dir", str(smoke_run), "--study",
                         "residual", "--epochs", "3"]) == 0
    record = json.loads((smoke_run / "results" / "recon_residual.json").read_text())
    assert (record["n_real_sims"], record["k"], record["seeds"]) == (1, 4, [0, 1])
    assert len(record["rows"]) == 2 * (1 + len(studies.RESIDUAL_SOURCES))
    assert record["config"]["max_epochs"] == 3
    _kind_independent_only_if_rounding_agrees(record)


def test_cli_residual_vae_reads_the_residual_studys_rate(smoke_run: Path, capsys):
    """The smoke profile's generators through the residual network (both, as the README runs it;
    then VAE-S alone with ``--only``), at the learning rate the residual study's record holds;
    without that record the command says what to run first."""
    record_path = smoke_run / "results" / "recon_residual.json"
    saved = record_path.read_text() if record_path.exists() else None
    try:
        if record_path.exists():
            record_path.unlink()
        with pytest.raises(SystemExit):
            studies.main(["--profile", "smoke", "--run-dir", str(smoke_run), "--study",
                          "residual_vae", "--epochs", "2"])
        assert "run --study residual first" in capsys.readouterr().err
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps({"lr_choice": {"chosen": 0.02}}))
        assert studies.main(["--profile", "smoke", "--run-dir", str(smoke_run), "--study",
                             "residual_vae", "--epochs", "2"]) == 0
        both = json.loads((smoke_run / "results" / "recon_residual_vae.json").read_text())
        assert both["generators"] == ["vae_s", "vae_c"]
        assert [r["generator"] for r in both["rows"]] == (["none", "vae_s", "vae_c"]
                                                           * len(both["seeds"]))
        assert [(g["generator"], g["rhythm"]) for g in both["gains"]] == [
            ("vae_s", "SR"), ("vae_s", "AF"), ("vae_c", "SR"), ("vae_c", "AF")]
        assert studies.main(["--profile", "smoke", "--run-dir", str(smoke_run), "--study",
                             "residual_vae", "--epochs", "2", "--only", "vae_s"]) == 0
        record = json.loads((smoke_run / "results" / "recon_residual_vae.json").read_text())
        assert record["config"]["lr"] == 0.02 and record["config"]["max_epochs"] == 2
        assert record["lr_from"].endswith("recon_residual.json")
        assert record["generators"] == ["vae_s"]
        assert [r["generator"] for r in record["rows"]] == ["none", "vae_s"] * len(record["seeds"])
        assert "kind_independent" not in record["provenance"]   # trained generators' windows
    finally:
        if saved is None:
            record_path.unlink(missing_ok=True)
        else:
            record_path.write_text(saved)


def test_cli_residual_confirm_replicates_the_exploratory_record_on_new_seeds(
        smoke_run: Path, capsys):
    """The confirmation through the CLI on the smoke generators: without the exploratory record
    it says what to run first (so does the ideal-window study without the confirmation); with
    one (the smoke residual_vae record, its VAE-C routed AF row set to a gain of 1.0 with spread
    0.5, so the design asks for few seeds) it fits k = 0 and VAE-C on the new seeds only,
    decides the hypothesis by the pre-registered rule, Holm-corrects the other five rows and
    describes all seeds together; other windows than the exploratory record's are refused
    before any fit. Then the ideal windows on the confirmation's seeds (``--study
    residual_ideal``), its fits reused (each gain checked by hand from the fits) and refused
    when its first k = 0 fit is not made again exactly."""
    from egmlib.workflow import results

    res = smoke_run / "results"
    paths = [res / "recon_residual.json", res / "recon_residual_vae.json"]
    saved = {p: p.read_text() if p.exists() else None for p in paths}
    base = ["--profile", "smoke", "--run-dir", str(smoke_run), "--epochs", "2"]
    try:
        paths[1].unlink(missing_ok=True)
        with pytest.raises(SystemExit):
            studies.main([*base, "--study", "residual_confirm"])
        assert "run --study residual_vae first" in capsys.readouterr().err
        (res / "recon_residual_confirm.json").unlink(missing_ok=True)
        with pytest.raises(SystemExit):
            studies.main([*base, "--study", "residual_ideal"])
        assert "run --study residual_confirm first" in capsys.readouterr().err
        res.mkdir(parents=True, exist_ok=True)
        paths[0].write_text(json.dumps({"lr_choice": {"chosen": 0.02}}))
        assert studies.main([*base, "--study", "residual_vae", "--only", "vae_c"]) == 0
        exploratory = json.loads(paths[1].read_text())
        row = next(g for g in exploratory["routed_gains"] if g["rhythm"] == "AF")
        row.update(mean_gain=1.0, sd_seeds=0.5)
        paths[1].write_text(json.dumps(exploratory))
        design = studies.confirmation_design(exploratory)
        assert design["seeds"][0] == max(exploratory["seeds"]) + 1 and len(design["seeds"]) < 10
        assert studies.main([*base, "--study", "residual_confirm"]) == 0
        record = json.loads((res / "recon_residual_confirm.json").read_text())
        assert record["design"] == design and record["seeds"] == design["seeds"]
        assert [(r["generator"], r["seed"]) for r in record["rows"]] == [
            (g, s) for s in design["seeds"] for g in ("none", "vae_c")]
        assert record["config"]["lr"] == 0.02 and record["config"]["max_epochs"] == 2
        primary = record["primary"]
        assert (primary["form"], primary["rhythm"]) == ("routed", "AF")
        assert primary["decision"] == results.decide(primary)
        assert primary["mean_gain"] == next(g for g in record["routed_gains"]
                                            if g["rhythm"] == "AF")["mean_gain"]
        assert sorted((r["form"], r["rhythm"]) for r in record["secondary"]) == [
            ("linear", "AF"), ("linear", "SR"), ("pooled", "AF"), ("pooled", "SR"),
            ("routed", "SR")]
        np.testing.assert_allclose([r["p_holm"] for r in record["secondary"]],
                                   results.holm([r["p_t"] for r in record["secondary"]]))
        assert record["combined"]["seeds"] == sorted(exploratory["seeds"] + design["seeds"])
        assert record["combined"]["n_seeds"] == len(record["combined"]["seeds"])
        # the ideal windows on the confirmation's seeds, its own fits reused
        assert studies.main([*base, "--study", "residual_ideal"]) == 0
        ideal = json.loads((res / "recon_residual_ideal.json").read_text())
        assert [(r["generator"], r["seed"], r["k"]) for r in ideal["rows"]] == [
            (studies.IDEAL_SOURCE, s, exploratory["k"]) for s in design["seeds"]]
        assert ideal["reuse_check"]["seed"] == design["seeds"][0]
        fits = {(r["generator"], r["seed"]): r for r in record["rows"] + ideal["rows"]}
        for family, (after, before) in (("gains", (studies.IDEAL_SOURCE, "none")),
                                        ("generator_vs_ideal", ("vae_c", studies.IDEAL_SOURCE))):
            assert sorted((g["form"], g["rhythm"]) for g in ideal[family]) == sorted(
                (f, r) for f in studies.RESIDUAL_FORMS for r in ("SR", "AF"))
            for g in ideal[family]:
                key = studies.RESIDUAL_FORMS[g["form"]][1]
                d = np.mean([fits[(after, s)][key][g["rhythm"]]["corr_mean"]
                             - fits[(before, s)][key][g["rhythm"]]["corr_mean"]
                             for s in design["seeds"]])
                assert g["mean_gain"] == pytest.approx(d, abs=1e-5), (family, g)
        confirm_path = res / "recon_residual_confirm.json"
        tampered = json.loads(confirm_path.read_text())
        tampered["rows"][0]["routed"]["AF"]["corr_mean"] += 1e-3
        confirm_path.write_text(json.dumps(tampered))
        with pytest.raises(ValueError, match="differs from the record's"):
            studies.main([*base, "--study", "residual_ideal"])
        exploratory["generator_windows"] = {k: "0" * 16 for k in
                                            exploratory["generator_windows"]}
        paths[1].write_text(json.dumps(exploratory))
        with pytest.raises(ValueError, match="generator_windows: vae_c's kept windows"):
            studies.main([*base, "--study", "residual_confirm"])
    finally:
        for p, text in saved.items():
            if text is None:
                p.unlink(missing_ok=True)
            else:
                p.write_text(text)
        (res / "recon_residual_confirm.json").unlink(missing_ok=True)
        (res / "recon_residual_ideal.json").unlink(missing_ok=True)


def _kind_independent_only_if_rounding_agrees(
        record: dict, tolerance: float = studies.RESIDUAL_ROUNDING_TOLERANCE) -> None:
    from egmlib.augmentation import residual

    rounding = record["rounding"]
    agrees = (rounding["max_abs_test_corr"] <= tolerance
              and rounding["best_epoch"][0] == rounding["best_epoch"][1]
              and rounding["best_epoch_by_rhythm"][0] == rounding["best_epoch_by_rhythm"][1])
    assert residual.rounding_agrees(rounding, tolerance) == agrees
    if agrees:
        assert f"{rounding['max_abs_test_corr']:.1e}" in record["provenance"]["kind_independent"]
    else:
        assert "kind_independent" not in record["provenance"]


def test_residual_vae_study_adds_each_generators_kept_windows_at_the_given_rate(
        tmp_path: Path):
    """The trained generators' kept windows through the residual network, on the small data set
    of test_augment with hand-made kept sets: per seed a k = 0 fit and one fit per generator,
    each with the first k windows 05 would take (VAE-C's SR and AF alternately), all at the
    learning rate given (nothing chosen); gains paired by seed, Holm within each family; the
    windows named by digest; bad input refused before any fit."""
    from dataclasses import replace

    from test_augment import fake_dataset

    from egmlib.augmentation import residual
    from egmlib.generators import synthesis
    from egmlib.workflow import records, results

    ds = fake_dataset(tmp_path, n_sims=9)
    ds.manifest["files"] = {"egm.npy": {"sha256": "a"}}
    shape = ds.egm.shape[1:]
    rng = np.random.default_rng(0)
    kept = {(g, r): rng.standard_normal((4, *shape)).astype(np.float32)
            for g, r in (("vae_s", "SR"), ("vae_c", "SR"), ("vae_c", "AF"))}
    for (gen, rhythm), x in kept.items():
        synthesis.save_synthetic(tmp_path, gen, rhythm, {"kept": x}, {})
    cfg = residual.ResidualConfig(hidden=4, kernel=3, max_epochs=2)
    study = studies.residual_vae_study(ds, {"profile": "smoke"}, tmp_path, 3e-2, arm=1, k=3,
                                       seeds=[0, 1, 2], config=cfg)
    assert [(r["generator"], r["k"], r["seed"]) for r in study["rows"]] == [
        (g, k, s) for s in (0, 1, 2) for g, k in (("none", 0), ("vae_s", 3), ("vae_c", 3))]
    assert all(r["config"]["lr"] == 3e-2 for r in study["rows"])
    assert study["generator_windows"] == records.input_fingerprint(tmp_path, ["vae_s", "vae_c"])
    # the fit with VAE-C's windows is the one run_residual makes with the first 3 of them
    base = studies.cached_baselines(ds, study["snr_db"], studies.EVAL_NOISE_SEED,
                                    tmp_path / "05_augment")
    want = residual.run_residual(ds, 1, 1, study["snr_db"], base, replace(cfg, lr=3e-2),
                                 synth_egm=np.stack([kept[("vae_c", "SR")][0],
                                                     kept[("vae_c", "AF")][0],
                                                     kept[("vae_c", "SR")][1]]), k=3)
    got = next(r for r in study["rows"] if (r["generator"], r["seed"]) == ("vae_c", 1))
    assert got["n_extra_pairs"] == want["n_extra_pairs"]
    assert got["test"]["SR"]["corr_mean"] == pytest.approx(want["test"]["SR"]["corr_mean"],
                                                           abs=1e-6)
    fits = {(r["generator"], r["seed"]): r for r in study["rows"]}
    for key, family in (("test", study["gains"]), ("linear", study["linear_gains"]),
                        ("routed", study["routed_gains"])):
        assert len(family) == 2 * 2
        for g in family:
            d = np.mean([fits[(g["generator"], s)][key][g["rhythm"]]["corr_mean"]
                         - fits[("none", s)][key][g["rhythm"]]["corr_mean"] for s in (0, 1, 2)])
            assert g["mean_gain"] == pytest.approx(d, abs=1e-5), (key, g)
    for family in ("gains", "routed_gains"):
        np.testing.assert_allclose([g["p_holm"] for g in study[family]],
                                   results.holm([g["p_t"] for g in study[family]]))
    for kw, message in (({"k": 5}, "k: got 5; allowed: at most 4"), ({"k": 0}, "k: got 0"),
                        ({"seeds": []}, "seeds: got none"), ({"lr": 0}, "lrs: got"),
                        ({"generators": ("gan",)}, "generators: got")):
        args = {"lr": 3e-2, "arm": 1, "k": 3, "seeds": [0], "config": cfg, **kw}
        with pytest.raises(ValueError, match=message):
            studies.residual_vae_study(ds, {"profile": "smoke"}, tmp_path, **args)


def test_residual_full_study_uses_every_training_simulation_and_pairs_by_seed(tmp_path: Path):
    """With every training simulation and no augmentation: the learning rate chosen on the
    validation pairs of the first seeds, one row per seed, the network and the routed network
    each paired with the linear correction of the same fit."""
    from test_augment import fake_dataset

    from egmlib.augmentation import augment, residual

    ds = fake_dataset(tmp_path, n_sims=9)
    ds.manifest["files"] = {"egm.npy": {"sha256": "a"}}
    cfg = residual.ResidualConfig(hidden=4, kernel=3, max_epochs=2)
    study = studies.residual_full_study(ds, {"profile": "smoke"}, tmp_path, seeds=[0, 1, 2],
                                        lrs=(1e-4, 3e-2), config=cfg)
    choice = study["lr_choice"]
    means = {lr: np.mean(v) for lr, v in choice["val_corr"].items()}
    assert choice["seeds"] == [0, 1] and f"{choice['chosen']:g}" == max(means, key=means.get)
    assert [r["seed"] for r in study["rows"]] == [0, 1, 2]
    n_pairs = len(augment.real_subset(ds, 0, 0)) * len(augment.train_torsos(ds))
    assert all(r["n_real_sims"] == 0 and r["k"] == 0 and r["n_train_pairs"] == n_pairs
               and r["config"]["lr"] == choice["chosen"] for r in study["rows"])
    for key in ("test", "routed"):
        name = "residual_vs_linear" if key == "test" else "routed_vs_linear"
        for rhythm, row in study[name].items():
            want = np.mean([r[key][rhythm]["corr_mean"] - r["linear"][rhythm]["corr_mean"]
                            for r in study["rows"]])
            assert row["mean_gain"] == pytest.approx(want, abs=1e-5) and row["n_seeds"] == 3
    assert study["rounding"]["best_epoch"][0] == study["rows"][0]["history"]["best_epoch"]
    with pytest.raises(ValueError, match="seeds: got none"):
        studies.residual_full_study(ds, {"profile": "smoke"}, tmp_path, seeds=[], config=cfg)
    with pytest.raises(ValueError, match="lrs: got"):  # before anything is written
        studies.residual_full_study(ds, {"profile": "smoke"}, tmp_path / "none", seeds=[0],
                                    lrs=(), config=cfg)
    assert not (tmp_path / "none").exists()


def test_cli_writes_the_residual_full_record(smoke_run: Path):
    """The smoke profile's residual network with every training simulation, two epochs."""
    assert studies.main(["--profile", "smoke", "--run-dir", str(smoke_run), "--study",
                         "residual_full", "--epochs", "2"]) == 0
    record = json.loads((smoke_run / "results" / "recon_residual_full.json").read_text())
    assert record["n_real_sims"] == 0 and record["config"]["max_epochs"] == 2
    assert len(record["rows"]) == min(studies.RESIDUAL_FULL_SEEDS, len(record["seeds"]))
    _kind_independent_only_if_rounding_agrees(record, studies.RESIDUAL_FULL_ROUNDING_TOLERANCE)


def test_confirmation_design_plans_new_seeds_from_the_exploratory_record_alone():
    """The design of the confirmation by hand: a routed AF gain of 0.04 with spread 0.05 over
    seeds 0-9, planned at three quarters (0.03, effect size 0.6): 24 new seeds (seeds 10-33)
    give a two-sided paired t-test at 0.05 at least 80% power (23 do not); powers at the whole
    and half gain bracket it; bad forms, rows and levels are refused."""
    from egmlib.workflow import results

    def gain(gen, rhythm, mean, sd=0.05):
        return {"generator": gen, "rhythm": rhythm, "mean_gain": mean, "sd_seeds": sd,
                "boot_lo": mean - 0.03, "boot_hi": mean + 0.03, "p_t": 0.03, "p_holm": 0.11}

    record = {"seeds": list(range(10)), "n_real_sims": 2, "k": 18,
              "routed_gains": [gain("vae_c", "SR", -0.02), gain("vae_c", "AF", 0.04)],
              "gains": [], "linear_gains": []}
    d = studies.confirmation_design(record)
    assert (d["generator"], d["form"], d["rhythm"], d["n_real_sims"], d["k"]) == (
        "vae_c", "routed", "AF", 2, 18)
    assert d["planned_effect"] == pytest.approx(0.03)
    assert d["seeds"] == list(range(10, 34))
    assert results.paired_t_power(0.03, 0.05, 23) < 0.8 <= d["power"]["planned"]
    assert d["power"]["half"] < d["power"]["planned"] < d["power"]["exploratory"]
    assert d["exploratory"]["mean_gain"] == 0.04 and d["exploratory"]["n_comparisons"] == 2
    with pytest.raises(ValueError, match="form: got 'best'"):
        studies.confirmation_design(record, {"generator": "vae_c", "form": "best",
                                             "rhythm": "AF"})
    with pytest.raises(ValueError, match="no pooled row for vae_c, AF"):
        studies.confirmation_design(record, {"generator": "vae_c", "form": "pooled",
                                             "rhythm": "AF"})
    with pytest.raises(ValueError, match="fraction, power, alpha"):
        studies.confirmation_design(record, fraction=0)
    with pytest.raises(ValueError, match="n_max: 20 seeds"):
        studies.confirmation_design(record, n_max=20)


def test_decide_needs_both_the_t_test_and_the_two_level_interval():
    """The pre-registered decision on hand-made rows: p < alpha with an interval above zero is a
    gain, below zero a loss; either condition alone is no change."""
    from egmlib.workflow import results

    def row(mean, p, lo, hi):
        return {"mean_gain": mean, "p_t": p, "boot_lo": lo, "boot_hi": hi}

    assert results.decide(row(0.03, 0.01, 0.01, 0.05)) == "gain"
    assert results.decide(row(-0.03, 0.01, -0.05, -0.01)) == "loss"
    assert results.decide(row(0.03, 0.01, -0.001, 0.05)) == "no change"
    assert results.decide(row(0.03, 0.06, 0.01, 0.05)) == "no change"
    assert results.decide(row(0.03, 0.04, 0.01, 0.05), alpha=0.01) == "no change"


def _af_row(label: str, df_generated: float, sr: float, af: float) -> dict:
    return {"label": label, "val": {"SR": {"corr_mean": sr}, "AF": {"corr_mean": af}},
            "af_periodicity": {"df_hz": {"generated": df_generated, "real": 6.0}}}


def test_choose_af_rate_hand_worked():
    base = _af_row("base", 2.0, 0.50, 0.10)  # 4 Hz from validation AF
    rows = [base,
            _af_row("nearer but costs SR", 5.9, 0.47, 0.10),  # loses 0.03 > 0.02
            _af_row("a little nearer", 2.4, 0.50, 0.10),  # 0.4 Hz nearer < 0.5
            _af_row("nearer", 5.0, 0.49, 0.09),  # 1 Hz away, loses 0.01 each
            _af_row("nearest", 6.8, 0.485, 0.12)]  # 0.8 Hz away (above), loses 0.015
    got = studies.choose_af_rate(rows)
    assert got["chosen"] == "nearest" and got["baseline_df_gap_hz"] == pytest.approx(4.0)
    assert [v["qualifies"] for v in got["rows"]] == [False, False, True, True]
    assert got["rows"][0]["corr_lost"]["SR"] == pytest.approx(0.03)
    # exactly 0.5 Hz nearer still qualifies
    edge = _af_row("edge", 2.5, 0.49, 0.09)
    assert studies.choose_af_rate([base, edge])["chosen"] == "edge"
    assert studies.choose_af_rate([base, rows[1], rows[2]])["chosen"] == "base"
    assert studies.choose_af_rate([base])["chosen"] == "base"
    with pytest.raises(ValueError, match="no rows"):
        studies.choose_af_rate([])


@pytest.mark.parametrize("study,rows", [("af_rate", studies.AF_RATE_ROWS),
                                        ("af_decoder", studies.AF_DECODER_ROWS),
                                        ("af_latent", studies.AF_LATENT_ROWS)])
def test_cli_writes_the_af_rate_record(smoke_run: Path, monkeypatch: pytest.MonkeyPatch,
                                       study: str, rows: tuple) -> None:
    record = _guarded_cli_record(smoke_run, monkeypatch, study, 1, f"generator_{study}")
    assert [(r["generator"], r["label"], r["changes"]) for r in record["rows"]] == [
        (g, label, changes) for g, label, changes in rows]
    assert record["split"] == "val" and record["epochs"] == {"vae_c": 1}
    for row in record["rows"]:
        rep = row["af_periodicity"]
        assert rep["gen_mode"] == record["base"]["vae_c"]["gen_mode"]
        layout = {**record["base"]["vae_c"], **row["changes"]}["latent_layout"]
        assert rep["decoder"]["stages"][0]["stage"] == {"vector": "dense map",
                                                        "sequence": "sequence map"}[layout]
    # the record's choice is the rule applied to its rows
    assert record["choice"] == json.loads(json.dumps(studies.choose_af_rate(record["rows"])))
