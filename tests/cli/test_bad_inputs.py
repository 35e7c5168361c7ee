"""Bad input of every kind: one line on stderr saying what and how, exit code 2, no run directory."""
import gzip

import numpy as np
import pytest

from aeopt.cli import main


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _files(tmp):
    """Bad files, made fresh for each case."""
    bad = tmp / "bad"
    bad.mkdir()
    np.save(bad / "nan.npy", np.array([[0.1, np.nan], [0.2, 0.3], [0.1, 0.1], [0.5, 0.5]]))
    np.save(bad / "object.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    _write(bad / "wrong_magic.idx", b"\x12\x34\x08\x03" + b"\x00" * 20)
    _write(bad / "truncated.idx", b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 100)
    _write(bad / "truncated.gz", gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 4000)[:40])
    _write(bad / "empty.csv", b"")
    _write(bad / "text.csv", b"a,b\n1,x\n2,3\n4,5\n")
    (bad / "images").mkdir()
    _write(bad / "images" / "broken.png", b"\x89PNG not really")
    _write(bad / "space.yaml", b"laten_dim: 4\n")
    _write(bad / "notyaml.yaml", b"a: [1, 2\n")
    np.save(bad / "table.npy", np.random.default_rng(0).normal(size=(30, 5)))
    return bad


CASES = [
    # (name, argv after "train", message fragment)
    ("missing file", ["--data", "npy:{bad}/nope.npy"], "no such file"),
    ("wrong idx magic", ["--data", "idx:{bad}/wrong_magic.idx"], "magic"),
    ("truncated idx", ["--data", "idx:{bad}/truncated.idx"], "truncated"),
    ("truncated gzip", ["--data", "idx:{bad}/truncated.gz"], "gzip"),
    ("nan values", ["--data", "npy:{bad}/nan.npy"], "NaN"),
    ("object array", ["--data", "npy:{bad}/object.npy"], "object"),
    ("empty table", ["--data", "csv:{bad}/empty.csv"], "empty"),
    ("non-numeric column", ["--data", "csv:{bad}/text.csv"], "column"),
    ("unreadable image", ["--data", "images:{bad}/images"], "broken.png"),
    ("unknown data spec", ["--data", "mnistt"], "known"),
    ("unknown model", ["--model", "resnet"], "known models: "),
    ("unknown loss", ["--loss", "msle"], "known: mse"),
    ("unknown optimizer", ["--optimizer", "adagrad"], "known: adam"),
    ("unknown schedule", ["--schedule", "step"], "known: constant"),
    ("latent 0", ["--latent-dim", "0"], "--latent-dim must be >= 1"),
    ("negative lr", ["--lr", "-0.1"], "--lr must be a positive number"),
    ("zero epochs", ["--epochs", "0"], "--epochs must be >= 1"),
    ("limit 0", ["--limit", "0"], "limit"),
    ("conv on a table", ["--data", "npy:{bad}/table.npy", "--model", "conv"], "use --model mlp"),
    ("bce on a table", ["--data", "npy:{bad}/table.npy", "--model", "mlp", "--loss", "bce"], "use --loss mse"),
    ("missing config", ["--config", "{bad}/none.yaml"], "no such config file"),
    ("unknown config key", ["--config", "{bad}/space.yaml"], "unknown setting laten_dim"),
    ("malformed config", ["--config", "{bad}/notyaml.yaml"], "not valid YAML"),
    ("fashion-mnist absent", ["--data", "fashion-mnist", "--data-dir", "{bad}/nowhere"], "apt-get install"),
    ("unknown conv norm", ["--norm", "instance"], "unknown norm"),
]


@pytest.mark.parametrize("name, argv, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_train_input_exits_2_with_one_line(tmp_path, capsys, name, argv, fragment):
    bad = _files(tmp_path)
    out = tmp_path / "run"
    argv = [a.format(bad=bad) for a in argv]
    code = main(["train", "--quiet", "--epochs", "1", *[a for a in argv], "--out", str(out)]
                if "--epochs" not in argv else ["train", "--quiet", *argv, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("aeopt: error: ")
    assert fragment in err, err
    assert "Traceback" not in err
    assert not out.exists(), "a failed run must not leave a run directory behind"


def test_bad_flag_value_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "many"])
    assert exit_info.value.code == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="unknown model"):
        main(["train", "--model", "resnet", "--debug", "--out", str(tmp_path / "r")])


@pytest.mark.parametrize("argv, fragment", [
    (["evaluate", "{tmp}"], "no config.yaml"),
    (["evaluate", "{tmp}/missing"], "no such run directory"),
    (["reconstruct", "{tmp}/missing", "x.npy", "y.npy"], "no such run directory"),
])
def test_bad_run_directories(tmp_path, capsys, argv, fragment):
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert fragment in capsys.readouterr().err
