"""`python -m train.fuse`: every method trains and evaluates end to end on two small trained members."""

import json

import pytest
import torch

from train import fuse, run

TINY = [
    "--image-size",
    "32",
    "--batch-size",
    "16",
    "--synthetic-train",
    "48",
    "--synthetic-val",
    "16",
    "--synthetic-test",
    "32",
    "--tta-views",
    "2",
    "--no-progress",
    "--loader",
    "torch",
    "--num-workers",
    "0",
]


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two members of different feature widths (512 and 2048) trained for one epoch on the built-in set."""
    root = tmp_path_factory.mktemp("fuse")
    paths = []
    for name in ("resnet18", "resnet50"):
        out = root / name
        rc = run.main(["--model", name, "--epochs", "1", "--data-root", str(root / "data"), "--out", str(out), *TINY])
        assert rc == 0
        paths.append(out / "best.pt")
    return root, paths


@pytest.mark.parametrize("method", ["late", "early", "joint", "attention"])
def test_each_method_end_to_end(members, method):
    root, paths = members
    out = root / f"fused-{method}"
    extra = ["--learned-weights"] if method == "late" else []
    argv = [
        "--method",
        method,
        "--members",
        *map(str, paths),
        "--epochs",
        "1",
        "--data-root",
        str(root / "data"),
        "--out",
        str(out),
        *TINY,
        *extra,
    ]
    assert fuse.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == method and summary["test"]["images"] == 32
    assert [m["model"] for m in summary["members"]] == ["resnet18", "resnet50"]
    assert all(0 <= m["test_accuracy"] <= 100 and m["test_accuracy_tta"] is not None for m in summary["members"])
    for member, path in zip(summary["members"], paths):  # each member's own accuracy, before any fusion training
        own = json.loads((path.parent / "summary.json").read_text())
        assert member["test_accuracy"] == pytest.approx(own["test_accuracy"])
    assert (out / "confusion_matrix.png").stat().st_size > 0 and (out / "curves.png").is_file()
    fused_state = torch.load(out / "best.pt", weights_only=False)["model"]
    for i, path in enumerate(paths, start=1):
        member_state = torch.load(path, weights_only=False)["model"]
        same = [torch.equal(fused_state[f"member{i}.{k}"], v) for k, v in member_state.items()]
        if method == "joint":
            assert not all(same), "joint fusion trains the members"
        else:
            assert all(same), "frozen members must stay bit-identical (weights and BN statistics)"
    head = [k for k in fused_state if not k.startswith("member")]
    assert head, "the method has trainable parameters of its own"


def test_untrained_late_fusion_is_the_mean_of_members(members):
    root, paths = members
    out = root / "late-plain"
    argv = [
        "--method",
        "late",
        "--members",
        *map(str, paths),
        "--data-root",
        str(root / "data"),
        "--out",
        str(out),
        *TINY,
        "--no-tta",
    ]
    assert fuse.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trained"] is False and summary["test_accuracy_tta"] is None


def test_bad_members_fail_with_one_line(members, tmp_path, capsys):
    root, paths = members
    # a bad checkpoint is a failed run (exit 1), as in train.run
    assert fuse.main(["--method", "early", "--members", str(paths[0]), str(tmp_path / "missing.pt")]) == 1
    assert "missing.pt: checkpoint not found" in capsys.readouterr().err
    ckpt = torch.load(paths[1], weights_only=False)
    for change, message in [
        ({"model_name": "resnet9000"}, "unknown model 'resnet9000'"),
        ({"num_classes": 8, "class_names": [*ckpt["class_names"], "contempt"]}, "members predict different classes"),
    ]:
        bad = tmp_path / "bad.pt"
        torch.save({**ckpt, **change}, bad)
        assert fuse.main(["--method", "early", "--members", str(paths[0]), str(bad)]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
