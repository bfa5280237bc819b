"""benchmarks/paper_smoke.py on CPU with the toy world: each check runs in its own process and
prints one PASS or FAIL line; without vLLM the vLLM checks fail and say why."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import paper_smoke  # noqa: E402


def test_each_check_prints_one_pass_or_fail_line(toy_world, tmp_path, capsys):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed here: this test shows the failure lines of a machine without it")
    except ImportError:
        pass
    status = paper_smoke.main(["--profile", "toy", "--set", f"data_dir={toy_world.data_dir}",
                               "--set", f"base_model={toy_world.model_dir}", "--root", str(tmp_path),
                               "--timeout", "600"])
    lines = capsys.readouterr().out.splitlines()
    assert status == 1 and len(lines) == 3
    assert lines[0].startswith("PASS sft: 1 step of ") and ", loss " in lines[0]
    assert lines[1].startswith("FAIL grpo: ") and "vLLM is not available" in lines[1]
    assert lines[2].startswith("FAIL inference: ") and "vllm" in lines[2]
    results = json.loads((tmp_path / "smoke.json").read_text())
    assert [results[name]["passed"] for name in ("sft", "grpo", "inference")] == [True, False, False]
    assert (tmp_path / "grpo.log").is_file()


def test_an_unknown_check_is_refused(capsys):
    with pytest.raises(SystemExit):
        paper_smoke.main(["--only", "sft,rollout"])
    assert "unknown check(s) ['rollout']" in capsys.readouterr().err
