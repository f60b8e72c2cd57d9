"""ImageNet-val: a tiny fake of each layout built in tmp_path, and the shipped class list."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from test_readers import check_contract

from saliqa.config import DataConfig, EvalSetConfig
from saliqa.data import ImageTable, open_dataset, read_imagenet_val
from saliqa.data.imagenet import DEVKIT, DEVKIT_ARCHIVE, KAGGLE_SOLUTION
from saliqa.errors import DatasetError
from saliqa.reference_data import imagenet_classes

# A fake devkit: real WNIDs, ILSVRC2012_IDs that are not in WNID order (the real ones are not either: id 1 is
# n02119789), and non-leaf synsets (num_children > 0) that are not among the 1000 classes.
LEAVES = {1: "n02119789", 2: "n02100735", 3: "n01440764", 490: "n01751748"}
NON_LEAVES = {1001: ("n00001740", [1002]), 1002: ("n00002137", [1, 2, 3, 490])}
# Image n's ILSVRC2012_ID is line n; image 6 is listed but absent from the folder.
GROUND_TRUTH = [490, 3, 1, 2, 3, 490]
LABELS = {f"ILSVRC2012_val_{n:08d}.JPEG": LEAVES[i] for n, i in enumerate(GROUND_TRUTH, start=1)}
PRESENT = sorted(LABELS)[:5]


def jpeg(path: Path, shade: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 48, 3), shade, dtype=np.uint8)).save(path, format="JPEG")
    return path


def flat_images(root: Path) -> Path:
    for k, name in enumerate(PRESENT):
        jpeg(root / name, 40 * k)
    return root


def meta_mat(leaves: dict[int, str] = LEAVES) -> bytes:
    """meta.mat as the devkit has it: a synsets struct array (N x 1), leaves with num_children == 0."""
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height"]
    entries = [(i, w, f"words {w}", [], 0) for i, w in leaves.items()]
    entries += [(i, w, "a group", kids, 1) for i, (w, kids) in NON_LEAVES.items()]
    synsets = np.zeros((len(entries), 1), dtype=[(f, object) for f in fields])
    for row, (class_id, wnid, words, kids, height) in enumerate(entries):
        children = np.array([kids], dtype=np.float64) if kids else np.zeros((1, 0))
        synsets[row, 0] = (float(class_id), wnid, words, "gloss", float(len(kids)), children, float(height))
    out = io.BytesIO()
    scipy.io.savemat(out, {"synsets": synsets})
    return out.getvalue()


def ground_truth_txt(ids: list[int] = GROUND_TRUTH) -> bytes:
    return "".join(f"{i}\n" for i in ids).encode()


def extracted_devkit(folder: Path, meta: bytes | None = None, ids: list[int] = GROUND_TRUTH) -> Path:
    data = folder / DEVKIT / "data"
    data.mkdir(parents=True)
    (data / "meta.mat").write_bytes(meta_mat() if meta is None else meta)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_bytes(ground_truth_txt(ids))
    return folder / DEVKIT


def devkit_archive(folder: Path) -> Path:
    """The devkit as its .tar.gz, with the other members the real one has around the two that matter."""
    archive = folder / DEVKIT_ARCHIVE
    folder.mkdir(parents=True, exist_ok=True)
    members = {
        f"{DEVKIT}/COPYING": b"licence",
        f"{DEVKIT}/data/meta.mat": meta_mat(),
        f"{DEVKIT}/data/ILSVRC2012_validation_ground_truth.txt": ground_truth_txt(),
        f"{DEVKIT}/evaluation/eval_flat.m": b"% matlab",
    }
    with tarfile.open(archive, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return archive


def kaggle_csv(path: Path, labels: dict[str, str] = LABELS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["ImageId,PredictionString"]
    for name, wnid in reversed(labels.items()):  # Kaggle's file is in no particular order
        lines.append(f"{name.removesuffix('.JPEG')},{wnid} 10 20 200 300 {wnid} 5 5 90 90 ")
    path.write_text("\n".join(lines) + "\n")
    return path


def check_flat(table: ImageTable, root: Path) -> None:
    check_contract(table)
    frame = table.frame
    assert list(frame["image_id"]) == sorted(LABELS)  # image-number order
    assert dict(zip(frame["image_id"], frame["label"], strict=True)) == LABELS
    assert list(frame["path"]) == [str(root / name) for name in sorted(LABELS)]
    assert dict(zip(frame["image_id"], frame["present"], strict=True)) == {n: n in PRESENT for n in LABELS}
    assert (frame["source_split"] == "val").all() and frame["reason"].isna().all()
    assert table.source == f"imagenet-val:{root}"
    assert f"1 of the 6 listed images are missing from {root}" in table.notes
    assert table.labels == ("n01440764", "n01751748", "n02100735", "n02119789")


# --- layout (a): WNID class folders -------------------------------------------------------------------


def test_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "val"
    jpeg(root / "n01440764" / "ILSVRC2012_val_00000293.JPEG")
    jpeg(root / "n01440764" / "ILSVRC2012_val_00002138.JPEG")
    jpeg(root / "n15075141" / "ILSVRC2012_val_00000100.JPEG")
    (root / "n01443537").mkdir()  # a class without images
    (root / ".cache").mkdir()
    (root / DEVKIT / "data").mkdir(parents=True)  # a devkit beside the classes is not a class
    (root / "README.txt").write_text("x")

    table = read_imagenet_val(root)
    check_contract(table)
    frame = table.frame
    assert list(frame["image_id"]) == [
        "n01440764/ILSVRC2012_val_00000293.JPEG",
        "n01440764/ILSVRC2012_val_00002138.JPEG",
        "n15075141/ILSVRC2012_val_00000100.JPEG",
    ]
    assert list(frame["label"]) == ["n01440764", "n01440764", "n15075141"]
    assert frame["present"].all() and (frame["source_split"] == "val").all()
    assert frame["path"].iloc[2] == str(root / "n15075141" / "ILSVRC2012_val_00000100.JPEG")
    assert table.source == f"imagenet-val:{root}"
    assert "997 of the 1000 ImageNet-1k classes have no folder" in table.notes
    assert "1 class folder without images" in table.notes
    assert "1 file directly in the ImageNet-val root ignored (not in a class folder)" in table.notes
    assert open_dataset("imagenet-val", root).frame.equals(frame)


def test_class_folder_that_is_not_a_wnid_is_named(tmp_path: Path) -> None:
    jpeg(tmp_path / "n01440764" / "a.JPEG")
    jpeg(tmp_path / "n99999999" / "b.JPEG")
    with pytest.raises(DatasetError, match=r"not named by an ImageNet-1k WNID: 'n99999999'"):
        read_imagenet_val(tmp_path)
    parent = tmp_path / "imagenet"
    jpeg(parent / "val" / "n01440764" / "a.JPEG")
    jpeg(parent / "train" / "n01440764" / "b.JPEG")
    with pytest.raises(DatasetError, match=r"'train', 'val' \(if .*val holds the class folders, point root"):
        read_imagenet_val(parent)


# --- layout (b): flat folder + Kaggle's LOC_val_solution.csv ------------------------------------------------


def test_flat_with_kaggle_solution_in_parent(tmp_path: Path) -> None:
    root = flat_images(tmp_path / "val")
    kaggle_csv(tmp_path / KAGGLE_SOLUTION)
    table = read_imagenet_val(root)
    check_flat(table, root)
    assert f"labels from {tmp_path / KAGGLE_SOLUTION}" in table.notes


def test_flat_with_kaggle_solution_in_kaggles_own_layout(tmp_path: Path) -> None:
    root = flat_images(tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val")
    kaggle_csv(tmp_path / KAGGLE_SOLUTION)
    check_flat(read_imagenet_val(root), root)


def test_flat_kaggle_unknown_wnid_is_named(tmp_path: Path) -> None:
    flat_images(tmp_path)
    labels = dict(LABELS)
    labels["ILSVRC2012_val_00000003.JPEG"] = "n12345678"
    solution = kaggle_csv(tmp_path / KAGGLE_SOLUTION, labels)
    with pytest.raises(DatasetError, match=rf"{solution} line 5: label 'n12345678' is not one of the 1000"):
        read_imagenet_val(tmp_path)


def test_flat_kaggle_malformed_files(tmp_path: Path) -> None:
    flat_images(tmp_path)
    (tmp_path / KAGGLE_SOLUTION).write_text("id,label\nILSVRC2012_val_00000001,n01440764\n")
    with pytest.raises(DatasetError, match="lacks the columns ImageId and PredictionString"):
        read_imagenet_val(tmp_path)
    (tmp_path / KAGGLE_SOLUTION).write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,\n")
    with pytest.raises(DatasetError, match="line 2: expected an ImageId"):
        read_imagenet_val(tmp_path)


# --- layout (c): flat folder + the official devkit ------------------------------------------------------


def test_flat_with_extracted_devkit_in_root(tmp_path: Path) -> None:
    root = flat_images(tmp_path / "val")
    devkit = extracted_devkit(root)
    jpeg(root / "ILSVRC2012_val_00000099.JPEG")  # on disk but not in the ground truth: no label
    table = read_imagenet_val(root)
    assert "ILSVRC2012_val_00000099.JPEG" not in set(table.frame["image_id"])
    check_flat(table, root)
    assert f"labels from {devkit / 'data' / 'ILSVRC2012_validation_ground_truth.txt'}" in table.notes
    assert f"1 image in {root} not in the ground truth left out (no label)" in table.notes


def test_flat_with_devkit_archive_in_parent_is_read_in_memory(tmp_path: Path) -> None:
    root = flat_images(tmp_path / "val")
    archive = devkit_archive(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    table = read_imagenet_val(root)
    check_flat(table, root)
    assert f"labels from {archive}" in table.notes
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing extracted
    extracted = tmp_path / "other"
    extracted_devkit(extracted)
    flat_images(extracted / "val")
    same = read_imagenet_val(extracted / "val").frame
    assert same.drop(columns="path").equals(table.frame.drop(columns="path"))


def test_devkit_ground_truth_outside_the_leaves_is_an_error(tmp_path: Path) -> None:
    flat_images(tmp_path / "val")
    extracted_devkit(tmp_path, ids=[490, 3, 1002])  # 1002 is a group of classes, not a class
    with pytest.raises(DatasetError, match=r"line 3: ILSVRC2012_ID 1002 is not a leaf class"):
        read_imagenet_val(tmp_path / "val")


def test_devkit_leaf_that_is_not_an_imagenet_1k_wnid_is_named(tmp_path: Path) -> None:
    flat_images(tmp_path / "val")
    extracted_devkit(tmp_path, meta=meta_mat({**LEAVES, 3: "n00000042"}))
    with pytest.raises(DatasetError, match=r"line 2: label 'n00000042' is not one of the 1000"):
        read_imagenet_val(tmp_path / "val")


def test_damaged_devkits(tmp_path: Path) -> None:
    root = flat_images(tmp_path / "val")
    extracted_devkit(tmp_path, meta=b"not a mat file")
    with pytest.raises(DatasetError, match="cannot be read as a MATLAB file"):
        read_imagenet_val(root)
    (tmp_path / DEVKIT / "data" / "meta.mat").unlink()
    with pytest.raises(DatasetError, match="lacks .*meta.mat: the devkit was extracted in part"):
        read_imagenet_val(root)
    (tmp_path / DEVKIT / "data" / "ILSVRC2012_validation_ground_truth.txt").unlink()
    (root / DEVKIT_ARCHIVE).write_bytes(b"\x1f\x8b broken")
    with pytest.raises(DatasetError, match="cannot be read as a .tar.gz"):
        read_imagenet_val(root)


# --- what cannot be read -----------------------------------------------------------------------------


def test_flat_without_ground_truth_says_what_it_looked_for(tmp_path: Path) -> None:
    root = flat_images(tmp_path / "val")
    with pytest.raises(DatasetError) as caught:
        read_imagenet_val(root)
    text = str(caught.value)
    for needed in (
        "5 ILSVRC2012_val images but no ground truth",
        f"{DEVKIT}/data/ILSVRC2012_validation_ground_truth.txt with {DEVKIT}/data/meta.mat",
        DEVKIT_ARCHIVE,
        KAGGLE_SOLUTION,
        f"in {root} and {tmp_path}",
        "https://image-net.org/download-images.php",
        "imagenet-object-localization-challenge",
        '[data] source = "imagenet-val" and root = ',
    ):
        assert needed in text


def test_roots_without_images(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"does not exist\. saliqa does not download ImageNet"):
        read_imagenet_val(tmp_path / "nope")
    extracted_devkit(tmp_path)  # a devkit alone is no dataset
    with pytest.raises(DatasetError, match=r"no ILSVRC2012_val_XXXXXXXX\.JPEG images and no class folders"):
        read_imagenet_val(tmp_path)
    flat_images(tmp_path)
    jpeg(tmp_path / "n01440764" / "ILSVRC2012_val_00000293.JPEG")
    with pytest.raises(DatasetError, match="both ILSVRC2012_val_\\* images and WNID class folders"):
        read_imagenet_val(tmp_path)


def test_config_accepts_imagenet_val(tmp_path: Path) -> None:
    assert DataConfig(source="imagenet-val", root=tmp_path).source == "imagenet-val"
    assert EvalSetConfig(name="imagenet", source="imagenet-val", root=tmp_path).source == "imagenet-val"


# --- the class list ----------------------------------------------------------------------------------


def test_class_list_is_torchvisions_order() -> None:
    classes = imagenet_classes()
    assert list(classes.columns) == ["index", "wnid", "name"]
    assert list(classes["index"]) == list(range(1000)) and list(classes.index) == list(range(1000))
    wnids = list(classes["wnid"])
    assert wnids == sorted(set(wnids)) and len(wnids) == 1000
    assert all(len(w) == 9 and w[0] == "n" and w[1:].isdigit() for w in wnids)
    assert classes.iloc[0].tolist() == [0, "n01440764", "tench"]
    assert classes.iloc[999].tolist() == [999, "n15075141", "toilet tissue"]
    assert classes["name"].is_unique
    classes.loc[0, "name"] = "changed"  # a fresh frame each call
    assert imagenet_classes().loc[0, "name"] == "tench"
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"saliqa.reference_data" = ["*.csv"]' in pyproject  # the file is installed with the package


def test_class_list_matches_its_sources() -> None:
    from importlib.resources import files

    pytest.importorskip("timm")
    from torchvision.models import ResNet18_Weights

    synsets = (files("timm.data") / "_info" / "imagenet_synsets.txt").read_text().split()
    classes = imagenet_classes()
    assert list(classes["wnid"]) == synsets
    assert list(classes["name"]) == list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
