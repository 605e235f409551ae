"""vm-export against bad and hostile input, end to end through ``cli.main``.

Every case asserts: an exit code from the documented set, no traceback (no --debug), one error
line naming the problem and the fix, outputs that existed before left byte-identical, and no
file or folder left behind (no staging folder, nothing in $TMPDIR).
"""
from __future__ import annotations

import errno
import os
import pickle
import shlex
import signal
import stat

import pytest
import torch

from exporter import cli
from exporter.models import VMamba

OLD = {"out/m.onnx": b"OLD MODEL", "out/m.inputs.json": b"OLD INPUTS", "out/m.golden.json": b"OLD GOLDEN",
       "out/m.trt.onnx": b"OLD TRT", "out/r.json": b'{"old": true}', "out/r.md": b"OLD SUMMARY"}
SMALL = dict(depths=[1, 1], dims=8, num_classes=5, ssm_d_state=1, ssm_ratio=1.0, forward_type="v05_noz",
             mlp_ratio=2.0, downsample_version="v3", patchembed_version="v2", norm_layer="ln2d")


def _snapshot(root) -> dict:
    """Every file (with its bytes) and folder below root. Skipped, as not ours: torch's compile cache
    folder (torchinductor_<user>, created by torch.export) and the session file that importing
    onnxruntime writes ($TMPDIR/.ses)."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith("torchinductor_")]
        for d in dirnames:
            files[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = None
        for f in filenames:
            if f == ".ses":
                continue
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                files[os.path.relpath(path, root)] = fh.read()
    return files


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working folder with pre-existing outputs, the cwd, and a private $TMPDIR that must stay empty."""
    for rel, data in OLD.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _fail(work, capsys, argv, code, problem, fix):
    before = _snapshot(work)
    got = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert got == code, (got, err)
    assert got in cli.EXIT_CODES
    assert "Traceback" not in err and "Traceback" not in out
    lines = [ln for ln in err.splitlines() if ln.startswith("vm-export: ")]
    assert lines, err
    message = lines[-1]
    assert problem in message, message
    assert fix in message, message
    assert "\x1b[" not in err
    after = _snapshot(work)
    assert after == before, set(after) ^ set(before)  # byte-identical, nothing new (no temp file, no staging dir)
    return message


# --------------------------------------------------------------------------- bad values (exit 2)
# argv | what the message must name (the problem) | and the fix it must give
BAD_VALUES_TABLE = """
    --vmeanba-layers auto --max-drop nan | finite fraction | 0.01 = 1 point
    --vmeanba-layers auto --max-drop inf | finite fraction | 0.01 = 1 point
    --vmeanba-layers auto --max-drop 1 | 100% drop | --max-drop 0.01
    --vmeanba-layers auto --max-drop -0.1 | >= 0 | 0.01 = 1 point
    --vmeanba-layers auto --max-drop abc | expected a fraction | vm-export --help
    --max-drop 0.1 | only applies to --vmeanba-layers auto or k=N | add one of them
    --arch vmamba_tiny_s1l8 --num-classes 0 | --num-classes must be a positive | got 0
    --arch vmamba_tiny_s1l8 --num-classes -3 | --num-classes must be a positive | got -3
    --num-classes 7 | does not apply to the bundled digits_vmamba | drop --num-classes
    --quartermap every:100 | selects no layer | choose a spec
    --quartermap-stride 3 | does nothing without --quartermap | add --quartermap
    --quartermap-keep 2 | does nothing without --quartermap | add --quartermap
    --calib digits | only applies to --vmeanba-layers auto or k=N | drop --calib
    --calib-limit 5 | only applies to --vmeanba-layers auto or k=N | drop --calib-limit
    --vmeanba-variant per-direction | does nothing without --vmeanba-layers | add --vmeanba-layers
    --quartermap --quartermap-stride 2 --quartermap-keep 2 | keep == stride | use keep < stride
    --quartermap --quartermap-stride 2 --quartermap-keep 3 | keep <= stride | --quartermap-keep
    --quartermap --quartermap-stride 65 | above its maximum 64 | --quartermap-stride
    --opset 99 | --opset 99 is not supported | from 18 to 25
    --opset 17 | --opset 17 is not supported | from 18 to 25
    --vmeanba-layers bogus | unknown layer 'bogus' | valid specs
    --vmeanba-layers 99 | out of range | indices 0..7
    --resolution 0x5 | --resolution | positive integers
    --batch 0 | --batch must be >= 1 | got 0
    --threads 0 | --threads must be >= 1 | got 0
    --precision fp8 | invalid choice: 'fp8' | vm-export --help
    --arch no_such_model | unknown --arch 'no_such_model' | --list-models
    --arch vmamba_tiny_s1l8 --vmeanba-layers auto | chooses layers on calibration data | pass --calib
    --no-such-flag | unrecognized arguments | vm-export --help
"""
BAD_VALUES = [(shlex.split(argv), problem.strip(), fix.strip())
              for argv, problem, fix in (line.split(" | ") for line in BAD_VALUES_TABLE.strip().splitlines())]


@pytest.mark.parametrize("argv,problem,fix", BAD_VALUES, ids=[" ".join(a) for a, _, _ in BAD_VALUES])
def test_bad_values_exit_2(work, capsys, argv, problem, fix):
    _fail(work, capsys, [*argv, "-o", "out/m.onnx", "--quiet"], cli.EXIT_BAD_ARGS, problem, fix)


# --------------------------------------------------------------------------- output paths
def test_report_equal_to_output_is_refused_before_work(work, capsys):
    _fail(work, capsys, ["-o", "out/m.onnx", "--report", "out/m.onnx", "--quiet"], cli.EXIT_BAD_ARGS,
          "are the same file", "give each output its own path")


def test_report_on_a_verify_file_is_refused(work, capsys):
    _fail(work, capsys, ["-o", "out/m.onnx", "--verify", "--report", "out/m.inputs.json", "--quiet"],
          cli.EXIT_BAD_ARGS, "are the same file", "give each output its own path")


def test_output_on_the_checkpoint_is_refused(work, capsys):
    _fail(work, capsys, ["--checkpoint", "out/m.onnx", "-o", "out/m.onnx", "--quiet"], cli.EXIT_BAD_ARGS,
          "would overwrite the --checkpoint file", "choose another output path")


def test_output_must_be_onnx(work, capsys):
    _fail(work, capsys, ["-o", "out/", "--quiet"], cli.EXIT_BAD_ARGS, "--output must end with .onnx", "got 'out/'")


def test_report_that_is_a_directory(work, capsys):
    (work / "out" / "reports").mkdir()
    _fail(work, capsys, ["-o", "out/m.onnx", "--report", "out/reports", "--quiet"], cli.EXIT_OUTPUT,
          "is a directory", "pass a file path inside it")


def test_output_that_is_a_directory(work, capsys):
    (work / "out" / "d.onnx").mkdir()
    _fail(work, capsys, ["-o", "out/d.onnx", "--quiet"], cli.EXIT_OUTPUT, "is a directory", "pass a file path")


def test_read_only_folder(work, capsys):
    ro = work / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _fail(work, capsys, ["-o", "ro/m.onnx", "--quiet"], cli.EXIT_OUTPUT, "is not writable",
              "choose another folder")
    finally:
        ro.chmod(0o755)


def test_read_only_target_file(work, capsys):
    target = work / "out" / "m.onnx"
    target.chmod(0o444)
    try:
        _fail(work, capsys, ["-o", "out/m.onnx", "--quiet"], cli.EXIT_OUTPUT, "is read-only", "chmod u+w")
    finally:
        target.chmod(0o644)


def test_parent_is_a_file(work, capsys):
    _fail(work, capsys, ["-o", "out/r.md/m.onnx", "--quiet"], cli.EXIT_OUTPUT, "is a file, not a folder",
          "choose a path in a folder")


def test_disk_too_full_is_refused_up_front(work, capsys, monkeypatch):
    import shutil

    from exporter import files

    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    _fail(work, capsys, ["-o", "out/m.onnx", "--quiet"], cli.EXIT_OUTPUT, "not enough disk space",
          "free some space or write elsewhere")


@pytest.mark.slow
def test_disk_full_while_writing(work, capsys, monkeypatch):
    from exporter.export import onnx_export

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(onnx_export, "atomic_write_bytes", full)
    _fail(work, capsys, ["-o", "out/m.onnx", "--static", "--quiet"], cli.EXIT_OUTPUT, "disk full while writing",
          "free some space")


# --------------------------------------------------------------------------- checkpoints (exit 3)
@pytest.fixture
def small_ckpt(work):
    torch.manual_seed(0)
    model = VMamba(**SMALL).eval()
    path = work / "ck" / "small.pth"
    path.parent.mkdir()
    torch.save({"model": model.state_dict()}, path)
    return path, model


def test_missing_checkpoint(work, capsys):
    _fail(work, capsys, ["--checkpoint", "ck/none.pth", "-o", "out/m.onnx", "--quiet"], cli.EXIT_CHECKPOINT,
          "no such file", "check the checkpoint path")


def test_garbage_checkpoint(work, capsys):
    (work / "junk.pth").write_bytes(b"this is not a checkpoint")
    _fail(work, capsys, ["--checkpoint", "junk.pth", "-o", "out/m.onnx", "--quiet"], cli.EXIT_CHECKPOINT,
          "not a readable PyTorch checkpoint", "re-download")


def test_empty_checkpoint(work, capsys):
    (work / "empty.pth").write_bytes(b"")
    _fail(work, capsys, ["--checkpoint", "empty.pth", "-o", "out/m.onnx", "--quiet"], cli.EXIT_CHECKPOINT,
          "file is empty", "re-save the checkpoint")


def test_truncated_checkpoint(work, capsys, small_ckpt):
    path, _ = small_ckpt
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _fail(work, capsys, ["--checkpoint", str(path), "-o", "out/m.onnx", "--quiet"], cli.EXIT_CHECKPOINT,
          "not a readable PyTorch checkpoint", "re-download")


def test_checkpoint_that_is_a_directory(work, capsys):
    (work / "ckdir").mkdir()
    _fail(work, capsys, ["--checkpoint", "ckdir", "-o", "out/m.onnx", "--quiet"], cli.EXIT_CHECKPOINT,
          "is a directory", "pass the checkpoint file inside it")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_code_executing_checkpoint_is_refused_and_nothing_runs(work, capsys):
    with open(work / "evil.pth", "wb") as f:
        pickle.dump({"model": _Evil()}, f)
    _fail(work, capsys, ["--checkpoint", "evil.pth", "-o", "out/m.onnx", "--quiet"], cli.EXIT_CHECKPOINT,
          "refusing to load", "use a checkpoint that holds only tensors")
    assert not (work / "pwned.txt").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights(work, capsys, small_ckpt, bad):
    path, model = small_ckpt
    sd = model.state_dict()
    sd["classifier.head.weight"][0, 0] = bad
    torch.save({"model": sd}, path)
    _fail(work, capsys, ["--checkpoint", str(path), "-o", "out/m.onnx", "--quiet"], cli.EXIT_CHECKPOINT,
          "hold NaN or Inf values (classifier.head.weight)", "use another checkpoint")


def test_checkpoint_for_another_arch(work, capsys, small_ckpt):
    path, _ = small_ckpt
    message = _fail(work, capsys, ["--checkpoint", str(path), "--arch", "vmamba_tiny_s1l8", "-o", "out/m.onnx",
                                   "--quiet"], cli.EXIT_CHECKPOINT, "does not fit vmamba_tiny_s1l8", "omit --arch")
    assert "arch=None)" not in message and "pass arch" not in message  # CLI wording, no stray parenthesis


def test_num_classes_that_contradicts_the_head(work, capsys, small_ckpt):
    path, _ = small_ckpt
    _fail(work, capsys, ["--checkpoint", str(path), "--num-classes", "9", "-o", "out/m.onnx", "--quiet"],
          cli.EXIT_CHECKPOINT, "head has 5 classes", "drop --num-classes")


def test_bundled_arch_takes_no_checkpoint(work, capsys, small_ckpt):
    path, _ = small_ckpt
    _fail(work, capsys, ["--checkpoint", str(path), "--arch", "digits_vmamba", "-o", "out/m.onnx", "--quiet"],
          cli.EXIT_BAD_ARGS, "bundled model with its own weights", "omit --arch")


# --------------------------------------------------------------------------- calibration data (exit 2)
def _calib(work, capsys, source, problem, fix):
    _fail(work, capsys, ["--vmeanba-layers", "k=1", "--calib", str(source), "-o", "out/m.onnx", "--quiet"],
          cli.EXIT_BAD_ARGS, problem, fix)


def test_calibration_folder_with_only_text_files(work, capsys):
    folder = work / "cal_txt"
    folder.mkdir()
    (folder / "a.txt").write_text("not an image")
    (folder / "b.txt").write_text("nor this")
    _calib(work, capsys, folder, "holds no image files (it has only .txt files)", "put images")


def test_empty_calibration_folder(work, capsys):
    (work / "cal_empty").mkdir()
    _calib(work, capsys, work / "cal_empty", "is empty", "put images")


def test_missing_calibration_source(work, capsys):
    _calib(work, capsys, work / "nowhere", "does not exist", "expected an image directory")


def test_corrupt_calibration_image(work, capsys):
    folder = work / "cal_bad"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"\x89PNG but not really")
    _calib(work, capsys, folder, "cannot read image", "replace or remove that file")


def test_calibration_array_of_the_wrong_shape(work, capsys):
    import numpy as np

    np.save(work / "cal.npy", np.zeros((4, 5), dtype=np.float32))
    _calib(work, capsys, work / "cal.npy", "must be preprocessed (N, 3, H, W)", "raw images must be uint8")


def test_unsupported_calibration_file(work, capsys):
    (work / "cal.csv").write_text("1,2,3\n")
    _calib(work, capsys, work / "cal.csv", "unsupported calibration file", "use a directory of images")


# --------------------------------------------------------------------------- interrupts (exit 130)
def test_ctrl_c_during_torch_export_exits_130_and_leaves_nothing(work, capsys, monkeypatch):
    def export_that_swallows_ctrl_c(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C arrives during tracing...
        except KeyboardInterrupt as exc:  # ...and torch.export turns it into its own error
            raise RuntimeError("Failed to export the model with torch.export") from exc
        raise AssertionError("SIGINT was not delivered")

    monkeypatch.setattr(torch.onnx, "export", export_that_swallows_ctrl_c)
    # the handler the process had before (Python's default, or SIG_IGN when the run was started in
    # the background of a non-interactive shell) must be the one in place afterwards
    before = signal.getsignal(signal.SIGINT)
    _fail(work, capsys, ["-o", "out/m.onnx", "--trt-onnx", "--quiet"], cli.EXIT_INTERRUPTED, "interrupted",
          "nothing was written")
    assert signal.getsignal(signal.SIGINT) is before  # the handler is restored


def test_ctrl_c_during_selection(work, capsys, monkeypatch):
    from exporter.compress import selection

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(selection, "select_vmeanba_layers", interrupted)
    _fail(work, capsys, ["--vmeanba-layers", "k=2", "-o", "out/m.onnx", "--quiet"], cli.EXIT_INTERRUPTED,
          "interrupted", "nothing was written")


@pytest.mark.slow
def test_ctrl_c_during_parity_after_export_leaves_old_outputs(work, capsys, monkeypatch):
    from exporter.verify import parity

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(parity, "check_parity", interrupted)
    _fail(work, capsys, ["-o", "out/m.onnx", "--verify", "--static", "--report", "out/r.json", "--quiet"],
          cli.EXIT_INTERRUPTED, "interrupted", "nothing was written")


# --------------------------------------------------------------------------- export errors, --debug
def test_export_error_is_shown_whole_without_ansi(work, capsys, monkeypatch):
    from exporter.export import onnx_export

    def broken(*args, **kwargs):
        raise onnx_export.ExportError("torch.onnx.export failed: first line\n\x1b[31msecond line\x1b[0m names the op")

    monkeypatch.setattr(onnx_export, "export_onnx", broken)
    before = _snapshot(work)
    assert cli.main(["-o", "out/m.onnx", "--quiet"]) == cli.EXIT_EXPORT
    _, err = capsys.readouterr()
    assert "first line" in err and "second line names the op" in err and "\x1b" not in err
    assert "Traceback" not in err and _snapshot(work) == before


def test_debug_shows_the_underlying_traceback(work, capsys):
    assert cli.main(["--vmeanba-layers", "bogus", "-o", "out/m.onnx", "--debug"]) == cli.EXIT_BAD_ARGS
    _, err = capsys.readouterr()
    assert "NoneType: None" not in err
    assert "Traceback" in err and "parse_layer_spec" in err and "ValueError: unknown layer 'bogus'" in err


def test_help_documents_every_option_and_exit_code(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    parser = cli.build_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help text"
    for code in cli.EXIT_CODES:
        assert f"\n  {code:<3d} " in text
    assert "k=N" in text.split("--max-drop FRACTION")[-1][:200]  # the budget applies to k=N too


def test_read_only_modes_respected_even_by_root(tmp_path):
    from exporter.files import OutputPathError, check_writable

    f = tmp_path / "x.onnx"
    f.write_bytes(b"x")
    f.chmod(stat.S_IRUSR)
    with pytest.raises(OutputPathError, match="read-only"):
        check_writable(f, "-o")
    f.chmod(0o644)
