""".dockerignore matching with docker's semantics (cases from moby/patternmatcher's own tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagebuild.lint.ignorefile import DockerIgnore, IgnoreFileError

# (pattern, path, excluded?): one pattern alone, the path or one of its parents matching it.
SINGLE = [
    ("**", "file", True),
    ("**", "dir/file", True),
    ("**/", "dir/file", True),
    ("**/**", "dir/file", True),
    ("dir/**", "dir/file", True),
    ("dir/**", "dir/dir2/file", True),
    ("**/dir", "dir", True),
    ("**/dir", "dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**file", "file", True),
    ("**file", "dir/file", True),
    ("**file", "dir/dirfile", True),
    ("**/file", "dir/dir/file", True),
    ("**/file", "dir/notfile", False),
    ("**/file*", "dir/dir/file.txt", True),
    ("**/file*txt", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True),
    ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False),
    ("a/*.txt", "a/file.txt", True),
    ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", False),
    ("a[b-d]e", "ace", True),
    ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True),
    ("a[^b-d]e", "ace", False),
    (".*", ".foo", True),
    (".*", "foo", False),
    ("abc.def", "abcdef", False),
    ("abc.def", "abc.def", True),
    ("abc?def", "abcZdef", True),
    ("abc?def", "abcdef", False),
    ("abc?def", "abc/def", False),
    ("a\\\\", "a\\", True),
    ("a\\*", "a*", True),
    ("a\\*", "ab", False),
    ("**/foo/bar", "foo/bar", True),
    ("**/foo/bar", "dir/dir2/foo/bar", True),
    ("abc/**", "abc", False),
    ("abc/**", "abc/def/ghi", True),
    ("**/.foo", ".foo", True),
    ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True),
    ("a(b)c/def", "a(b)c/xyz", False),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("*", "anything/below/it", True),
    ("*.log", "debug.log", True),
    ("*.log", "logs/debug.log", False),  # relative to the root: * stays in one component
    ("docs", "docs/a/b.md", True),  # a directory's pattern excludes everything below it
    ("docs", "docsite/a.md", False),
    ("docs/", "docs/x", True),  # cleaned: the trailing / goes
    ("/docs", "docs/x", True),  # a leading / is dropped: patterns are relative to the context root
    ("./docs", "docs/x", True),
    ("docs/../src", "src/x", True),
    ("a//b", "a/b", True),
    ("node_modules", "app/node_modules/x", False),  # not at any depth without **/
]


@pytest.mark.parametrize(("pattern", "path", "expected"), SINGLE)
def test_one_pattern(pattern: str, path: str, expected: bool) -> None:
    assert DockerIgnore.parse(pattern).excluded(path) is expected


@pytest.mark.parametrize("path", ["docs/a.md", "./docs/a.md", "/docs/a.md", "docs//a.md", "docs/x/../a.md"])
def test_the_path_asked_about_is_cleaned_too(path: str) -> None:
    assert DockerIgnore.parse("docs/*.md").excluded(path)


def test_exceptions_bring_back_what_earlier_patterns_excluded() -> None:
    ignore = DockerIgnore.parse("docs\n!docs/README.md\n")
    assert ignore.excluded("docs/other.md")
    assert not ignore.excluded("docs/README.md")
    assert ignore.has_exceptions


def test_everything_but_some_directories() -> None:
    ignore = DockerIgnore.parse("*\n!src\n!requirements.txt\n")
    assert not ignore.excluded("src/app/main.py")
    assert not ignore.excluded("requirements.txt")
    assert ignore.excluded("README.md")
    assert ignore.excluded(".git/config")


def test_the_last_matching_pattern_wins() -> None:
    assert DockerIgnore.parse("!a.txt\na.txt\n").excluded("a.txt")
    assert not DockerIgnore.parse("a.txt\n!a.txt\n").excluded("a.txt")
    ignore = DockerIgnore.parse("*.md\n!README*.md\nREADME-secret.md\n")
    assert [ignore.excluded(p) for p in ("x.md", "README.md", "README-secret.md")] == [True, False, True]


def test_an_exception_inside_an_excluded_directory_can_be_excluded_again() -> None:
    ignore = DockerIgnore.parse("build\n!build/keep\nbuild/keep/tmp\n")
    assert ignore.excluded("build/x")
    assert not ignore.excluded("build/keep/a")
    assert ignore.excluded("build/keep/tmp/b")


def test_comments_blank_lines_and_surrounding_blanks() -> None:
    text = "\ufeff# a comment\n\n   \n  *.log  \n! keep.log\n"
    ignore = DockerIgnore.parse(text)
    assert ignore.excluded("a.log")
    assert not ignore.excluded("keep.log")
    assert [p.line for p in ignore.patterns] == [4, 5]
    # only a # in the first column starts a comment, as in docker
    assert DockerIgnore.parse(" #x").excluded("#x")
    assert not DockerIgnore.parse("#x").excluded("#x")


def test_the_root_is_never_excluded() -> None:
    ignore = DockerIgnore.parse("*\n**\n")
    assert not ignore.excluded(".")
    assert not ignore.excluded("")
    assert ignore.excluded("a")


def test_matching_pattern_names_the_line_that_decides() -> None:
    ignore = DockerIgnore.parse("# secrets\nsecrets/\n*.log\n!keep.log\n")
    pattern = ignore.matching_pattern("secrets/key")
    assert pattern is not None and (pattern.line, pattern.text) == (2, "secrets")
    assert ignore.matching_pattern("keep.log") is None
    assert ignore.matching_pattern("app.py") is None


@pytest.mark.parametrize(("text", "line"), [("a\n!\n", 2), ("ok\n!   \n", 2), ("a[b\n", 1), ("x\nab\\\n", 2)])
def test_patterns_docker_refuses_are_errors_with_their_line(text: str, line: int) -> None:
    with pytest.raises(IgnoreFileError) as info:
        DockerIgnore.parse(text)
    assert info.value.line == line


def test_from_file_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / ".dockerignore"
    path.write_text(".git\n**/__pycache__\n")
    ignore = DockerIgnore.from_file(str(path))
    assert ignore.excluded(".git/HEAD")
    assert ignore.excluded("pkg/sub/__pycache__/m.pyc")
    assert not ignore.excluded("pkg/m.py")
