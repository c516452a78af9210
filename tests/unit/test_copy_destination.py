"""COPY and ADD's pure rules: destinations (docker's), --chown and --chmod, source globs. No FUSE, no image."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from imagebuild.builder.copydest import (
    CopyError,
    Destination,
    Directory,
    Node,
    Source,
    absolute,
    directories,
    names_directory,
    place,
    resolve,
    target,
)
from imagebuild.builder.copyflags import parse_chmod, parse_chown, uses_names
from imagebuild.builder.copysource import ContextTree, component_regex, expand, find, has_magic, relative, walk
from imagebuild.context import load

DIR = Node(stat.S_IFDIR | 0o755)
FILE = Node(stat.S_IFREG | 0o644)


def link(target: str) -> Node:
    return Node(stat.S_IFLNK | 0o777, target=target)


class FakeTree:
    """An image (or a context) as a dict of absolute path -> Node; `/` is always a directory."""

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = {"/": DIR, **nodes}
        self.asked: list[str] = []

    def node(self, path: str) -> Node | None:
        self.asked.append(path)
        parent = path.rsplit("/", 1)[0] or "/"
        if path != "/":
            above = self.nodes.get(parent)
            assert above is not None and above.is_dir, f"asked for {path} below a non-directory {parent}"
        return self.nodes.get(path)

    def children(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted(p[len(prefix) :] for p in self.nodes if p.startswith(prefix) and "/" not in p[len(prefix) :])

    def open(self, path: str, flags: int = 0) -> int:  # noqa: ARG002 (FileTree's signature)
        raise AssertionError("the rules never read data")


IMAGE = FakeTree(
    {
        "/app": DIR,
        "/tmp": DIR,
        "/opt": DIR,
        "/opt/existing": Node(stat.S_IFDIR | 0o750, 0, 0, 7),
        "/etc": DIR,
        "/etc/passwd": FILE,
        "/real": DIR,
        "/link": link("/real"),
        "/rlink": link("real"),
        "/up": link("../../real/deeper/.."),
        "/back": link("missing/deeper/../../link"),
        "/loop": link("/loop"),
        "/file-link": link("/etc/passwd"),
        "/etc/alt": link("../opt/existing"),
    }
)


@pytest.mark.parametrize(
    ("dest", "workdir", "expected"),
    [
        (".", "/app", "/app"),
        ("./", "/app", "/app"),
        ("sub/f.txt", "/app", "/app/sub/f.txt"),
        ("/abs", "/app", "/abs"),
        ("../../../x", "/app", "/x"),
        ("x", "", "/x"),
        ("/opt/newdir/.", "/", "/opt/newdir"),
        ("//double//slash/", "/", "/double/slash"),
        ("/", "/app", "/"),
    ],
)
def test_a_relative_destination_is_relative_to_workdir_and_clean(dest: str, workdir: str, expected: str) -> None:
    assert absolute(dest, workdir) == expected


@pytest.mark.parametrize(
    ("dest", "says_dir"),
    [("/x/", True), (".", True), ("/x/.", True), ("./", True), ("/", True), ("/x", False), ("x.", False)],
)
def test_what_names_a_directory(dest: str, says_dir: bool) -> None:
    assert names_directory(dest) is says_dir


def test_symlinks_resolve_inside_the_image() -> None:
    assert resolve("/link/f.txt", IMAGE).path == "/real/f.txt"
    assert resolve("/rlink", IMAGE) == resolve("/real", IMAGE) == type(resolve("/", IMAGE))("/real", DIR)
    assert resolve("/up/x", IMAGE).path == "/real/x"  # `..` in a target: from where the link is, never above /
    assert resolve("/back/f", IMAGE).path == "/real/f"  # back out of a missing directory, then through a link
    assert resolve("/etc/alt/f", IMAGE).path == "/opt/existing/f"
    assert resolve("/file-link", IMAGE).node == FILE  # a link as the last component is followed too
    assert resolve("/missing/deeper/still", IMAGE) == type(resolve("/", IMAGE))("/missing/deeper/still", None)
    with pytest.raises(CopyError, match="too many levels of symbolic links"):
        resolve("/loop/x", IMAGE)
    with pytest.raises(CopyError, match="/etc/passwd is not a directory"):
        resolve("/etc/passwd/x", IMAGE)


def test_a_missing_component_ends_the_lookups() -> None:
    tree = FakeTree({})
    resolve("/a/b/c", tree)
    assert tree.asked == ["/a"]


def place_files(dest: str, *names: str, workdir: str = "/") -> Destination:
    return place(dest, workdir, [Source(n) for n in names], IMAGE)


def test_the_reported_cases() -> None:
    # WORKDIR /app + COPY requirements.txt . : into /app, never a file named /app
    assert place_files(".", "requirements.txt", workdir="/app") == Destination("/app", True)
    # COPY f.txt /tmp : /tmp is a directory in the image, so into it
    assert place_files("/tmp", "f.txt") == Destination("/tmp", True)
    # COPY f.txt /opt/newdir/. : a directory, made by the copy
    assert place_files("/opt/newdir/.", "f.txt") == Destination("/opt/newdir", True)
    assert target(Destination("/opt/newdir", True), Source("f.txt")) == "/opt/newdir/f.txt"


def test_a_single_file_without_a_directory_is_written_at_the_path() -> None:
    assert place_files("/opt/new.txt", "f.txt") == Destination("/opt/new.txt", False)
    assert place_files("/etc/passwd", "f.txt") == Destination("/etc/passwd", False)  # replaces the file
    assert place_files("/file-link", "f.txt") == Destination("/etc/passwd", False)  # through the link
    assert target(Destination("/opt/new.txt", False), Source("f.txt")) == "/opt/new.txt"


def test_destinations_through_symlinked_directories() -> None:
    assert place_files("/link/", "f.txt") == Destination("/real", True)
    assert place_files("/link", "f.txt") == Destination("/real", True)  # the link's target is a directory
    assert place_files("/rlink/g2.txt", "g.txt") == Destination("/real/g2.txt", False)


def test_a_directory_source_copies_its_contents_into_the_destination() -> None:
    destination = place("/newdest", "/", [Source("dir", is_dir=True)], IMAGE)
    assert destination == Destination("/newdest", True)
    assert target(destination, Source("dir", is_dir=True)) == "/newdest"  # not /newdest/dir
    assert target(destination, Source("archive.tar", unpack=True)) == "/newdest"
    assert place("/x", "/", [Source("a.tar", unpack=True)], IMAGE) == Destination("/x", True)


def test_several_sources_need_a_directory() -> None:
    message = "When using COPY with more than one source file, the destination must be a directory and end with a /"
    with pytest.raises(CopyError, match=message):
        place_files("/nodir", "a", "b")
    with pytest.raises(CopyError, match="When using ADD with"):
        place("/nodir", "/", [Source("a"), Source("b")], IMAGE, "ADD")
    with pytest.raises(CopyError, match=message):
        place_files("/etc/passwd", "a", "b")
    assert place_files("/nodir/", "a", "b") == Destination("/nodir", True)
    assert place_files("/tmp", "a", "b") == Destination("/tmp", True)  # an existing directory is one
    assert place_files(".", "a", "b", workdir="/new") == Destination("/new", True)


def test_a_file_where_a_directory_is_needed_is_an_error() -> None:
    with pytest.raises(CopyError, match="exists in the image and is not a directory"):
        place_files("/etc/passwd/", "f.txt")
    with pytest.raises(CopyError, match="exists in the image and is not a directory"):
        place("/etc/passwd", "/", [Source("dir", is_dir=True)], IMAGE)


def test_directories_on_the_way_keep_the_images_metadata_and_new_ones_are_marked_new() -> None:
    found = directories(Destination("/opt/existing/new/deeper", True), IMAGE)
    assert found == [
        Directory("/opt", DIR),
        Directory("/opt/existing", Node(stat.S_IFDIR | 0o750, 0, 0, 7)),
        Directory("/opt/existing/new", None),
        Directory("/opt/existing/new/deeper", None),
    ]
    assert directories(Destination("/opt/file.txt", False), IMAGE) == [Directory("/opt", DIR)]
    assert directories(Destination("/f.txt", False), IMAGE) == []
    assert directories(Destination("/", True), IMAGE) == []


# --chmod and --chown


@pytest.mark.parametrize(("text", "mode"), [("0640", 0o640), ("755", 0o755), ("4755", 0o4755), ("0", 0)])
def test_chmod_is_octal(text: str, mode: int) -> None:
    assert parse_chmod(text) == mode


@pytest.mark.parametrize("text", ["u+x", "0888", "17777", "", "-1", "0x1ff"])
def test_chmod_errors_as_docker_words_them(text: str) -> None:
    with pytest.raises(CopyError, match="it should be octal string and between 0 and 07777"):
        parse_chmod(text)


PASSWD = "root:x:0:0:root:/root:/bin/sh\n# a comment\napp:x:1000:100::/home/app:/bin/sh\n"
GROUP = "root:x:0:\nstaff:x:50:app\n"


@pytest.mark.parametrize(
    ("spec", "owner"),
    [
        ("1000:1000", (1000, 1000)),
        ("1000", (1000, 1000)),  # a number alone: the same number for the group
        ("1001", (1001, 1001)),
        ("app", (1000, 100)),  # a name alone: the user's primary group
        ("app:staff", (1000, 50)),
        ("app:7", (1000, 7)),
        ("7:staff", (7, 50)),
        ("root", (0, 0)),
        (":staff", (0, 50)),
    ],
)
def test_chown_names_come_from_the_images_files(spec: str, owner: tuple[int, int]) -> None:
    assert parse_chown(spec, PASSWD, GROUP) == owner


def test_chown_errors() -> None:
    with pytest.raises(CopyError, match="no user 'nobody' in the image's /etc/passwd"):
        parse_chown("nobody", PASSWD, GROUP)
    with pytest.raises(CopyError, match="no group 'wheel' in the image's /etc/group"):
        parse_chown("app:wheel", PASSWD, GROUP)
    with pytest.raises(CopyError, match="no user 'app'"):
        parse_chown("app", None, None)  # an image without /etc/passwd
    with pytest.raises(CopyError, match="give USER, USER:GROUP"):
        parse_chown("a:b:c", PASSWD, GROUP)
    assert parse_chown("root:root", None, None) == (0, 0)
    assert uses_names("app:1") and uses_names("1:staff") and not uses_names("1000:1000") and not uses_names("7")


# source globs: Go's filepath.Match, one component at a time


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("*.log", "h1.log", True),
        ("*.log", ".hidden.log", True),  # unlike a shell, * takes a leading dot
        ("*.log", "h1.log.gz", False),
        ("h?.log", "h1.log", True),
        ("h?.log", "h10.log", False),
        ("[a-c]*", "beta", True),
        ("[a-c]*", "delta", False),
        ("[^a-c]*", "delta", True),
        ("[^a-c]*", "alpha", False),
        ("\\*", "*", True),
        ("\\*", "x", False),
        ("[\\]]", "]", True),
        ("file[[]1]", "file[1]", True),
    ],
)
def test_glob_components_follow_go_filepath_match(pattern: str, name: str, matches: bool) -> None:
    assert bool(component_regex(pattern).fullmatch(name)) is matches


@pytest.mark.parametrize("pattern", ["[", "[]", "[a-", "x\\", "[-a]"])
def test_bad_patterns_are_errors(pattern: str) -> None:
    with pytest.raises(CopyError, match="bad pattern"):
        component_regex(pattern)


CONTEXT = FakeTree(
    {
        "/f.txt": FILE,
        "/g.txt": FILE,
        "/h1.log": FILE,
        "/src": DIR,
        "/src/a.py": FILE,
        "/src/b.py": FILE,
        "/src/deep": DIR,
        "/src/deep/c.py": FILE,
        "/toplink": link("f.txt"),
        "/dirlink": link("src"),
        "/dangling": link("nothing"),
        "/outside": link("/../../etc"),
    }
)


def test_a_glob_matches_at_its_own_depth_only() -> None:
    assert expand("src/*.py", CONTEXT) == ["src/a.py", "src/b.py"]
    assert expand("*/*.py", CONTEXT) == ["src/a.py", "src/b.py"]
    assert expand("**/*.py", CONTEXT) == ["src/a.py", "src/b.py"]  # Go's ** is two *: one component
    assert expand("*.txt", CONTEXT) == ["f.txt", "g.txt"]
    assert expand("nothing*", CONTEXT) == []
    assert has_magic("a[b") and has_magic("a\\b") and not has_magic("plain/name.txt")


def test_sources_follow_symlinks_inside_their_tree_and_keep_the_name_matched() -> None:
    (found,) = find(["toplink"], CONTEXT, "the build context")
    assert (found.path, found.name, found.is_dir) == ("/f.txt", "toplink", False)
    (found,) = find(["dirlink"], CONTEXT, "the build context")
    assert (found.path, found.is_dir) == ("/src", True)
    (found,) = find(["."], CONTEXT, "the build context")
    assert (found.path, found.is_dir) == ("/", True)
    assert [m.path for m in find(["/src/../f.txt", "src/"], CONTEXT, "x")] == ["/f.txt", "/src"]


def test_source_errors() -> None:
    with pytest.raises(CopyError, match="COPY source 'missing' not found in the build context"):
        find(["missing"], CONTEXT, "the build context")
    with pytest.raises(CopyError, match=r"not found in the build context \(it is excluded by .dockerignore\)"):
        find(["secret"], CONTEXT, "the build context", excluded=lambda rel: rel == "secret")
    with pytest.raises(CopyError, match="'dangling' is a symlink to nothing"):
        find(["dangling"], CONTEXT, "the build context")
    with pytest.raises(CopyError, match="is outside the build context"):
        relative("../x", "the build context")
    with pytest.raises(CopyError, match="COPY source 'none\\*' matches nothing in stage 'build'"):
        find(["none*"], CONTEXT, "stage 'build'")
    assert relative("/a/./b/", "x") == "a/b" and relative(".", "x") == ""


def test_a_glob_matching_nothing_is_fine_beside_a_source_that_matches() -> None:
    """`COPY package.json yarn.lock* ./`: the optional file may be missing."""
    assert [m.name for m in find(["f.txt", "yarn.lock*"], CONTEXT, "the build context")] == ["f.txt"]


def test_a_link_out_of_the_tree_stays_in_it() -> None:
    with pytest.raises(CopyError, match="'outside' is a symlink to nothing"):
        find(["outside"], CONTEXT, "the build context")  # /../../etc is the tree's /etc, which it has not


def test_the_context_as_a_tree_honours_dockerignore(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep").write_text("k\n")
    (tmp_path / "a" / "drop").write_text("d\n")
    (tmp_path / "b.txt").write_text("b\n")
    (tmp_path / "link").symlink_to("b.txt")
    (tmp_path / ".dockerignore").write_text("a\n!a/keep\n")
    tree = ContextTree(load(str(tmp_path)))
    assert tree.children("/") == [".dockerignore", "a", "b.txt", "link"]
    assert tree.children("/a") == ["keep"]  # the directory leads to a re-included file: it is there
    assert tree.node("/a/drop") is None and tree.node("/missing") is None
    assert [rel for rel, _ in walk(tree, "/")] == [".dockerignore", "a", "a/keep", "b.txt", "link"]
    (found,) = find(["link"], tree, "the build context")
    assert (found.path, found.name) == ("/b.txt", "link")
    with pytest.raises(CopyError, match=r"'a/drop' not found in the build context \(it is excluded"):
        find(["a/drop"], tree, "the build context", tree.context.ignore.excluded)
