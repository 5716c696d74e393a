"""Which files encode/decode read and where their outputs go: directories, -R, hidden files, clashes."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from controlgic_cli.cli.file_plan import plan_tasks
from controlgic_cli.errors import OptionsError
from controlgic_cli.io.image_io import IMAGE_SUFFIXES

from .conftest import synthetic_photo
from .test_cli import run


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not read while planning")
    return path


@pytest.fixture
def tree(tmp_path):
    """photos/{b.png, a.jpg, notes.txt, ._a.jpg, .cache/c.png, 2024/{d.png, 06/e.webp}}"""
    root = tmp_path / "photos"
    for name in ("b.png", "a.jpg", "notes.txt", "._a.jpg", ".cache/c.png", "2024/d.png", "2024/06/e.webp"):
        touch(root / name)
    return root


def pairs(plan, base):
    return [(str(Path(t.source).relative_to(base)), str(Path(t.target).relative_to(base))) for t in plan.tasks]


def test_a_directory_gives_its_own_images_in_name_order(tree):
    plan = plan_tasks((str(tree),), str(tree.parent / "out"), IMAGE_SUFFIXES, ".cgic")
    assert pairs(plan, tree.parent) == [("photos/a.jpg", "out/a.cgic"), ("photos/b.png", "out/b.cgic")]
    assert plan.notes == []


def test_recursive_mirrors_the_tree_and_leaves_hidden_entries_out(tree):
    out = tree.parent / "out"
    plan = plan_tasks((str(tree),), str(out), IMAGE_SUFFIXES, ".cgic", recursive=True)
    assert pairs(plan, tree.parent) == [
        ("photos/a.jpg", "out/a.cgic"),
        ("photos/b.png", "out/b.cgic"),
        ("photos/2024/d.png", "out/2024/d.cgic"),
        ("photos/2024/06/e.webp", "out/2024/06/e.cgic"),
    ]
    assert (out / "2024" / "06").is_dir()  # the writer finds the folders there


def test_recursive_without_output_writes_beside_each_input(tree):
    plan = plan_tasks((str(tree),), None, IMAGE_SUFFIXES, ".cgic", recursive=True)
    assert ("photos/2024/06/e.webp", "photos/2024/06/e.cgic") in pairs(plan, tree.parent)


def test_two_inputs_with_one_output_are_refused_before_any_work(tree):
    touch(tree / "a.png")  # beside a.jpg: both would write a.cgic
    out = tree.parent / "out"
    with pytest.raises(OptionsError, match="a.jpg and .*a.png -> .*a.cgic"):
        plan_tasks((str(tree),), str(out), IMAGE_SUFFIXES, ".cgic")
    assert not out.exists()
    # Two folders holding the same name clash in one output folder too.
    touch(tree.parent / "more" / "b.png")
    with pytest.raises(OptionsError, match="same output"):
        plan_tasks((str(tree / "2024"), str(tree.parent / "more"), str(tree / "b.png")), str(out), IMAGE_SUFFIXES, ".x")


def test_a_folder_without_inputs_gives_a_note_with_the_hint_for_subfolders(tmp_path, tree):
    plan = plan_tasks((str(tree / "2024"),), str(tmp_path / "out"), {".cgic"}, ".png")
    assert plan.tasks == []
    assert plan.notes == [f"{tree / '2024'}: no .cgic files in it (its subfolders are left out without -R)"]
    plan = plan_tasks((str(tree / "2024" / "06"),), None, IMAGE_SUFFIXES, ".cgic")
    assert [Path(t.target).name for t in plan.tasks] == ["e.cgic"] and plan.notes == []


def test_single_inputs_keep_their_mapping(tmp_path):
    photo = touch(tmp_path / "x.png")
    assert plan_tasks((str(photo),), None, IMAGE_SUFFIXES, ".cgic").tasks[0].target == str(tmp_path / "x.cgic")
    folder = tmp_path / "out"
    folder.mkdir()
    assert plan_tasks((str(photo),), str(folder), IMAGE_SUFFIXES, ".cgic").tasks[0].target == str(folder / "x.cgic")
    assert plan_tasks(("-",), None, IMAGE_SUFFIXES, ".cgic").tasks[0].target == "-"
    with pytest.raises(OptionsError, match="stdin"):
        plan_tasks(("-", str(photo)), None, IMAGE_SUFFIXES, ".cgic")
    other = tmp_path / "y.png"
    other.write_bytes(photo.read_bytes())
    with pytest.raises(OptionsError, match="stdout"):
        plan_tasks((str(photo), str(other)), "-", IMAGE_SUFFIXES, ".cgic")


def test_cli_round_trip_of_a_tree(tmp_path, tiny_weights):
    photos = tmp_path / "photos"
    for name, seed in (("top.png", 0), ("2024/inner.png", 1), ("2024/06/deep.png", 2)):
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_photo(24, 40, seed=seed)).save(photos / name)
    result = run(["encode", photos, "-R", "-o", tmp_path / "coded", "--weights", tiny_weights])
    assert result.exit_code == 0, result.output
    assert "3 of 3 files done" in result.stderr
    result = run(["decode", tmp_path / "coded", "--recursive", "-o", tmp_path / "back", "--weights", tiny_weights])
    assert result.exit_code == 0, result.output
    decoded = sorted(str(p.relative_to(tmp_path / "back")) for p in (tmp_path / "back").rglob("*.png"))
    assert decoded == ["2024/06/deep.png", "2024/inner.png", "top.png"]
    assert Image.open(tmp_path / "back" / "2024" / "06" / "deep.png").size == (40, 24)


def test_cli_decode_skip_existing_resumes_a_tree(tmp_path, tiny_weights):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for name, seed in (("a.png", 0), ("sub/b.png", 1)):
        Image.fromarray(synthetic_photo(24, 40, seed=seed)).save(photos / name)
    assert run(["encode", photos, "-R", "--weights", tiny_weights]).exit_code == 0
    back = tmp_path / "back"
    (back / "sub").mkdir(parents=True)
    (back / "sub" / "b.png").write_bytes(b"finished earlier")
    result = run(["decode", photos, "-R", "-o", back, "--skip-existing", "--weights", tiny_weights])
    assert result.exit_code == 0, result.output
    assert "2 of 2 files done (1 skipped, output exists)" in result.stderr
    assert (back / "sub" / "b.png").read_bytes() == b"finished earlier"
    assert Image.open(back / "a.png").size == (40, 24)
    assert run(["decode", photos, "-f", "--skip-existing", "--weights", tiny_weights]).exit_code == 2


def test_cli_clash_is_a_usage_error_that_writes_nothing(tmp_path, tiny_weights):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(synthetic_photo(24, 40)).save(photos / "x.png")
    Image.fromarray(synthetic_photo(24, 40)).save(photos / "x.jpg")
    result = run(["encode", photos, "-f", "--weights", tiny_weights])
    assert result.exit_code == 2
    assert "two inputs would write the same output" in result.stderr
    assert sorted(p.name for p in photos.iterdir()) == ["x.jpg", "x.png"]


def test_cli_warns_about_an_empty_folder(tmp_path, tiny_weights):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    result = run(["encode", tmp_path / "empty", "--weights", tiny_weights])
    assert result.exit_code == 0
    assert "no images in it (its subfolders are left out without -R)" in result.stderr


def test_a_trailing_slash_makes_the_output_a_folder_even_for_one_input(tmp_path):
    photo = touch(tmp_path / "x.png")
    plan = plan_tasks((str(photo),), str(tmp_path / "new") + "/", IMAGE_SUFFIXES, ".cgic")
    assert plan.tasks[0].target == str(tmp_path / "new" / "x.cgic") and (tmp_path / "new").is_dir()
    stdin_plan = plan_tasks(("-",), str(tmp_path / "from-stdin") + "/", IMAGE_SUFFIXES, ".cgic")
    assert stdin_plan.tasks[0].target == str(tmp_path / "from-stdin" / "stdin.cgic")


def test_several_inputs_need_a_folder_output(tmp_path):
    a, b = touch(tmp_path / "a.png"), touch(tmp_path / "b.png")
    (tmp_path / "notes").write_text("a file in the way")
    with pytest.raises(OptionsError, match="in the way"):
        plan_tasks((str(a), str(b)), str(tmp_path / "notes"), IMAGE_SUFFIXES, ".cgic")
    with pytest.raises(OptionsError, match="in the way|cannot make"):
        plan_tasks((str(a), str(b)), str(tmp_path / "notes" / "sub"), IMAGE_SUFFIXES, ".cgic")
    with pytest.raises(OptionsError, match="looks like a file name"):
        plan_tasks((str(a), str(b)), str(tmp_path / "all.cgic"), IMAGE_SUFFIXES, ".cgic")
    assert not (tmp_path / "all.cgic").exists()
    plan = plan_tasks((str(a), str(b)), str(tmp_path / "all.cgic") + "/", IMAGE_SUFFIXES, ".cgic")
    assert [Path(t.target).name for t in plan.tasks] == ["a.cgic", "b.cgic"]


def test_an_output_may_not_replace_its_input(tmp_path):
    photo = touch(tmp_path / "x.png")
    with pytest.raises(OptionsError, match="replace the input"):
        plan_tasks((str(photo),), str(photo), IMAGE_SUFFIXES, ".cgic")
    link = tmp_path / "link.png"
    link.symlink_to(photo)
    with pytest.raises(OptionsError, match="replace the input"):
        plan_tasks((str(photo),), str(link), IMAGE_SUFFIXES, ".cgic")


def test_an_input_named_twice_is_coded_once(tmp_path, tree):
    photo = touch(tmp_path / "x.png")
    plan = plan_tasks((str(photo), str(tmp_path / "." / "x.png")), None, IMAGE_SUFFIXES, ".cgic")
    assert [t.source for t in plan.tasks] == [str(photo)]
    plan = plan_tasks((str(tree), str(tree / "a.jpg")), str(tmp_path / "out"), IMAGE_SUFFIXES, ".cgic")
    assert [Path(t.source).name for t in plan.tasks] == ["a.jpg", "b.png"]
