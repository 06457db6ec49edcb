"""`ofa-deploy --version`, `space`, `subnet sample|show`, and the torch-free device side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ofa_deploy import __version__
from ofa_deploy.cli import main
from ofa_deploy.cost import macs
from ofa_deploy.space import SearchSpace, Subnet

NO_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None; "


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and __version__ in out


def test_space_json(capsys):
    code, out, _ = run_cli(capsys, "space", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["population_size"] == 7371**5
    assert data["smallest"]["macs"] == 3_935_184 and data["largest"]["macs"] == 15_198_240
    assert Subnet.from_dict(data["middle"]["subnet"]) == SearchSpace().middle()


def test_space_table(capsys):
    code, out, _ = run_cli(capsys, "space", "--in-channels", "1")
    space = SearchSpace(in_channels=1)
    assert code == 0 and "Population" in out
    assert f"{macs(space, space.smallest()) / 1e6:.3f}" in out and f"{macs(space, space.largest()) / 1e6:.3f}" in out
    assert str(space.largest()) in out.replace("\n", "").replace("│", "").replace(" ", "")


def test_subnet_sample_is_seeded_and_in_bucket(capsys):
    args = ("subnet", "sample", "--mflops", "10", "--n", "5", "--seed", "3", "--json")
    first = json.loads(run_cli(capsys, *args)[1])
    second = json.loads(run_cli(capsys, *args)[1])
    assert first == second and len(first["subnets"]) == 5
    space = SearchSpace()
    for row in first["subnets"]:
        s = Subnet.from_dict(row["subnet"])
        assert abs(macs(space, s) / 1e6 - 10) <= 0.5 and row["macs"] == macs(space, s)


def test_subnet_show_accepts_text_json_and_file(capsys, tmp_path: Path):
    s = SearchSpace().sample(11)
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"subnet": s.to_dict()}))
    outputs = [json.loads(run_cli(capsys, "subnet", "show", spec, "--json")[1])
               for spec in (str(s), json.dumps(s.to_dict()), str(path))]
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0]["text"] == str(s) and outputs[0]["macs"] == macs(SearchSpace(), s)


@pytest.mark.parametrize(
    "args, message",
    [
        (("subnet", "show", "33-33"), "stages"),
        (("subnet", "show", '{"ks": [4]}'), "missing"),
        (("subnet", "show", "missing.json"), "does not exist"),
        (("subnet", "sample", "--mflops", "30"), "no subnet has 30"),
        (("subnet", "sample", "--n", "0"), "--n"),
        (("nonsense",), "No such command"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, args, message):
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("ofa-deploy: error:") and message in err
    assert "Traceback" not in err


def test_bad_subnet_file(capsys, tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run_cli(capsys, "subnet", "show", str(bad))
    assert code == 2 and "not valid JSON" in err


def test_device_side_runs_without_torch():
    """space, cost and the CLI's torch-free commands work where `import torch` fails."""
    code = NO_TORCH + (
        "import ofa_deploy.space, ofa_deploy.cost, ofa_deploy.run, ofa_deploy.io;"
        "from ofa_deploy.cli import main;"
        "s = ofa_deploy.space.SearchSpace();"
        "print(ofa_deploy.cost.macs(s, s.largest()));"
        "raise SystemExit(main(['subnet', 'sample', '--mflops', '8', '--json']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "15198240"
    assert "torch" not in result.stderr


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "ofa_deploy", "space", "--json"], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert result.returncode == 0 and json.loads(result.stdout)["largest"]["macs"] == 15_198_240
