"""egmlib.core.params: the parameter schema, notebook parameter cells and YAML profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from egmlib.core import params
from egmlib.core.params import ParameterError, Params, defaults, load_profile, resolve, validate

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb")
                   if p.stem in params.NOTEBOOKS)
PROFILES = sorted((ROOT / "params").glob("*.yaml"))


def _parameters_cell(path: Path) -> dict:
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"
             and "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
    ns: dict = {}
    exec("".join(c if isinstance(c, str) else "" for c in cells[0]["source"]), ns)
    return {k: v for k, v in ns.items() if not k.startswith("__")}  # builtins, annotations


def test_there_is_a_notebook_to_check():
    assert NOTEBOOKS, "no notebook under notebooks/ has a schema in params.NOTEBOOKS"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_parameters_cell_equals_the_defaults(path):
    cell = _parameters_cell(path)
    want = defaults(path.stem)
    assert sorted(set(want) - set(cell)) == [], "parameters missing from the notebook cell"
    assert sorted(set(cell) - set(want)) == [], "notebook parameters unknown to params.py"
    for name, value in want.items():
        assert cell[name] == value and type(cell[name]) is type(value), name
    # same order as the schema, so papermill's --help-notebook reads like the docs
    assert list(cell) == list(params.NOTEBOOKS[path.stem])
    # and the defaults pass their own checks
    assert validate(path.stem, cell) == want


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_profiles_load_and_validate(path):
    values = load_profile(path)
    assert values["profile"] == path.stem
    p = validate("01_data", values)
    assert p.profile == path.stem
    for name, value in values.items():
        if name in p:
            assert p[name] == value


def test_smoke_profile_is_small():
    p = validate("01_data", load_profile(ROOT / "params" / "smoke.yaml"))
    assert p.mesh_edge_mm >= 3.0 and p.n_sr + p.n_af <= 20 and p.record_s <= 4.0


def test_validate_fills_defaults_and_promotes_ints():
    p = validate("01_data", {"n_rec": 64, "fs": 50, "T": 200, "record_s": 6})
    assert isinstance(p, Params)
    assert p.n_rec == 64 and p["seed"] == 0
    assert p.fs == 50.0 and isinstance(p.fs, float)
    assert isinstance(p.record_s, float)
    assert set(p) == set(params.NOTEBOOKS["01_data"])
    with pytest.raises(TypeError, match="read-only"):
        p["n_rec"] = 3
    with pytest.raises(TypeError, match="read-only"):
        p.update(n_rec=3)
    with pytest.raises(AttributeError):
        _ = p.not_a_parameter


def test_a_notebook_can_override_a_schema_default():
    """VAE-C sees twice VAE-S's windows per epoch, so its default epochs are fewer; it trains
    in float32 where VAE-S takes the schema's automatic precision."""
    assert validate("02_vae_s", {}).epochs == params.SPECS["epochs"].default == 110
    assert validate("02_vae_s", {}).precision == "auto"
    assert validate("03_vae_c", {}).precision == "float32"
    assert validate("03_vae_c", {}).epochs == params.NOTEBOOK_DEFAULTS["03_vae_c"]["epochs"] == 40
    assert validate("03_vae_c", {"epochs": 25}).epochs == 25  # an explicit value wins
    for notebook, overrides in params.NOTEBOOK_DEFAULTS.items():
        for name, value in overrides.items():  # an override must pass its own check
            assert params.SPECS[name].check(name, value) == value, (notebook, name)


@pytest.mark.parametrize(("values", "name"), [
    ({"n_rec": "256"}, "n_rec"),  # wrong type
    ({"n_rec": 25.0}, "n_rec"),  # a float for an int
    ({"seed": True}, "seed"),  # a bool is no int
    ({"rebuild": 1}, "rebuild"),  # an int is no bool
    ({"dt_ms": "0.1"}, "dt_ms"),
    ({"n_rec": 2}, "n_rec"),  # below the range
    ({"dt_ms": 0.5}, "dt_ms"),  # above the range
    ({"seed": -1}, "seed"),
    ({"snr_db": float("nan")}, "snr_db"),
    ({"profile": "huge"}, "profile"),  # not a choice
])
def test_invalid_values_name_the_parameter(values, name):
    with pytest.raises(ParameterError, match=f"'{name}'") as info:
        validate("01_data", values)
    assert "allowed" in str(info.value)


def test_messages_say_what_is_allowed():
    with pytest.raises(ParameterError, match=r"int in \[16, 4096\]"):
        validate("01_data", {"n_rec": 2})
    with pytest.raises(ParameterError, match="one of 'smoke', 'default', 'paper'"):
        validate("01_data", {"profile": "huge"})


def test_unknown_names_are_rejected():
    with pytest.raises(ParameterError, match=r"unknown parameter 'n_recs'.*n_rec"):
        validate("01_data", {"n_recs": 10})
    with pytest.raises(ParameterError, match="unknown notebook"):
        validate("99_nothing", {})
    with pytest.raises(ParameterError, match="unknown notebook"):
        defaults("99_nothing")


def test_cross_parameter_checks():
    # a window of T / fs = 4 s does not fit in 2 s of record
    with pytest.raises(ParameterError, match=r"'T' and 'fs'.*record_s") as info:
        validate("01_data", {"T": 400, "fs": 100.0, "record_s": 2.0})
    assert "4 s" in str(info.value)
    assert validate("01_data", {"T": 200, "fs": 100.0, "record_s": 2.0}).T == 200
    with pytest.raises(ParameterError, match=r"'fs'.*divisor of 500"):
        validate("01_data", {"fs": 30.0, "T": 16})
    with pytest.raises(ParameterError, match="test_fraction"):
        validate("01_data", {"test_fraction": 0.5, "val_fraction": 0.45})
    with pytest.raises(ParameterError, match="'test_torsos'"):
        validate("01_data", {"n_torsos": 2, "test_torsos": 2})
    # 06's range of k: a non-empty list of k >= 1
    assert validate("06_sweep", {"range_k": [2, 4]}).range_k == [2, 4]
    with pytest.raises(ParameterError, match=r"'range_k': got \[\]; allowed: non-empty list"):
        validate("06_sweep", {"range_k": []})
    with pytest.raises(ParameterError, match=r"'range_k\[1\]': got 0"):
        validate("06_sweep", {"range_k": [14, 0]})


def test_resolve_reads_a_notebook_namespace():
    import math

    ns = {**defaults("01_data"), "n_rec": 32, "_private": 5, "math": math, "In": [],
          "get_ipython": None, "__name__": "__main__"}
    p = resolve("01_data", ns)
    assert p.n_rec == 32
    typo = {**ns, "n_sr_": 3}  # a misspelt -p name
    with pytest.raises(ParameterError, match="'n_sr_'"):
        resolve("01_data", typo)
    with pytest.raises(ParameterError, match="'hop_s'"):
        resolve("01_data", {**ns, "hop_s": "half"})


@pytest.mark.parametrize(("text", "match"), [
    ("profile: smoke\nn_recc: 3\n", r"bad\.yaml.*'n_recc'"),  # a typo, named with the file
    ("n_rec: many\n", "'n_rec'"),
    ("- a\n- b\n", "flat mapping"),
    ("sweep_k: [0]\nseeed: 3\n", "seeed"),
    ("sweep_k: [0]\nseed: -1\n", "'seed'"),
    ("sweep_generators: [vae_s, vae_x]\n", r"'sweep_generators\[1\]'.*'vae_s', 'vae_c'"),
    ("sweep_seeds: []\n", r"'sweep_seeds'.*non-empty"),
    ("T: 400\nfs: 100.0\nrecord_s: 2.0\n", r"bad\.yaml.*'T' and 'fs'"),  # a stage's rule
])
def test_load_profile_rejects_bad_files(tmp_path, text, match):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ParameterError, match=match):
        load_profile(bad)


def test_a_profile_is_shared_by_every_notebook_and_the_sweep(tmp_path):
    """One YAML serves papermill's -f, the pipeline and the sweep: a name of any notebook, and
    the sweep's keys, are accepted and checked by their stage's specs."""
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert load_profile(empty) == {}
    good = tmp_path / "good.yaml"
    good.write_text("seed: 7\nn_rec: 64\nprofile: smoke\nsweep_k: [0, 2]\nsweep_seeds: [0]\n")
    assert load_profile(good) == {"seed": 7, "n_rec": 64, "profile": "smoke", "sweep_k": [0, 2],
                                  "sweep_seeds": [0]}
