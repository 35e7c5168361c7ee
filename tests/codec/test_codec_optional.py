"""The codec's entropy coder is an optional group (aeopt[codec]): without constriction, aeopt imports and
trains its other models, and a codec command says in one line how to install it (exit 2)."""
import subprocess
import sys

# A sitecustomize-free way to hide an installed package: a None entry in sys.modules makes its import fail.
HIDE = "import sys; sys.modules['constriction'] = None; "


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIDE + code], capture_output=True, text=True, timeout=120)


def test_aeopt_imports_lists_and_trains_without_constriction(tmp_path):
    out = _run("import aeopt; from aeopt.cli.main import main; raise SystemExit(main(['models']))")
    assert out.returncode == 0, out.stderr
    assert "codec" in out.stdout and "conv" in out.stdout
    # the README's first command: a conv autoencoder on digits (one epoch here)
    argv = ["train", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "digits")]
    out = _run(f"from aeopt.cli.main import main; raise SystemExit(main({argv!r}))")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "digits" / "metrics.json").is_file() and (tmp_path / "digits" / "model.safetensors").is_file()


def test_codec_commands_say_how_to_install_constriction(tmp_path):
    for argv in (["train", "--model", "codec", "--data", "digits", "--out", str(tmp_path / "run")],
                 ["compress", str(tmp_path / "missing-run"), "x.png", "--out", str(tmp_path / "aec")]):
        out = _run(f"from aeopt.cli.main import main; raise SystemExit(main({argv!r}))")
        assert out.returncode == 2, (argv, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "pip install 'aeopt[codec]'" in lines[0], out.stderr
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "aec").exists()  # nothing written


def test_the_coder_itself_says_how_to_install_constriction():
    # a way into the coder that skips load_codec and train_codec (a library user's own tables)
    code = ("from aeopt.codec.coder import Coder; from aeopt.errors import AeoptError\n"
            "try:\n    Coder(None)\nexcept AeoptError as e:\n    print('refused:', e)")
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused:") and "pip install 'aeopt[codec]'" in out.stdout
