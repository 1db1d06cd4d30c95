"""The README's Python example runs against a cube written by the CLI."""

from __future__ import annotations

import re
import shutil

from conftest import ROOT


def test_readme_python_example_runs(cli, tmp_path, monkeypatch):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    res = cli("run", "configs/seed.yaml")
    assert res.returncode == 0, res.stderr
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README has a Python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_readme_quickstart_is_the_two_make_commands():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("##", 1)[0]
    assert "make run" in quickstart and "make test" in quickstart
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, flags=re.M)
    assert re.search(r"^test:", makefile, flags=re.M)


def test_every_readme_yaml_block_is_a_valid_config():
    import yaml

    from gridstress.config import config_from_dict

    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README has a YAML example"
    for text in blocks:
        # Portfolio paths are relative to configs/, where the README's example lives.
        cfg = config_from_dict(yaml.safe_load(text), "README.md", base_dir=ROOT / "configs")
        assert cfg.n_cells > 0 and cfg.loans


def test_readme_variable_table_is_the_output_table():
    from gridstress.variables import OUTPUTS

    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| (`[^|]+`) \| ([^|]+) \|", readme, flags=re.M)
    units = {}
    for names, unit in rows:
        for name in re.findall(r"`([a-z_]+)`", names):
            units[name] = unit.strip()
    assert units == {name: o.units for name, o in OUTPUTS.items()}
