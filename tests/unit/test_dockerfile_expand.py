"""Variable substitution as docker does it in ENV, COPY, WORKDIR, ... (not in RUN)."""

from __future__ import annotations

import pytest

from imagebuild.dockerfile import ExpansionError, expand, expand_words

ENV = {"A": "a", "EMPTY": "", "SPACED": "x  y", "P": "/usr/local/bin", "FILE": "archive.tar.gz"}


@pytest.mark.parametrize(
    ("word", "result"),
    [
        ("$A", "a"),
        ("${A}", "a"),
        ("pre-${A}-post", "pre-a-post"),
        ("$A$A", "aa"),
        ("$UNSET", ""),
        ("${UNSET}", ""),
        ("$A_b", ""),  # the name is A_b
        ("${A}_b", "a_b"),
        ("$", "$"),
        ("a$", "a$"),
        ("$ a", "$ a"),
        ("$1", ""),
        # defaults and alternatives
        ("${UNSET:-def}", "def"),
        ("${EMPTY:-def}", "def"),
        ("${A:-def}", "a"),
        ("${UNSET-def}", "def"),
        ("${EMPTY-def}", ""),
        ("${A:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${UNSET:-}", ""),
        ("${A:?msg}", "a"),
        # nesting
        ("${UNSET:-${A}}", "a"),
        ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
        ("${A:+[${A}]}", "[a]"),
        ("${UNSET:-a b}", "a b"),
        # escapes and quotes
        ("\\$A", "$A"),
        ("\\${A}", "${A}"),
        ("a\\ b", "a b"),
        ("'$A'", "$A"),
        ("'a  b'", "a  b"),
        ('"$A  b"', "a  b"),
        ('"\\$A"', "$A"),
        ('"a\\"b"', 'a"b'),
        ('"a\\nb"', "a\\nb"),  # other escapes stay literal inside double quotes
        ("'it''s'", "its"),
        ('"it\'s"', "it's"),
        ("${UNSET:-'$A'}", "$A"),
        ("trailing\\", "trailing"),
        # pattern removal and replacement
        ("${P#*/}", "usr/local/bin"),
        ("${P##*/}", "bin"),
        ("${P%/*}", "/usr/local"),
        ("${P%%/*}", ""),
        ("${FILE%.*}", "archive.tar"),
        ("${FILE%%.*}", "archive"),
        ("${FILE#*.}", "tar.gz"),
        ("${P/local/opt}", "/usr/opt/bin"),
        ("${P//\\//:}", ":usr:local:bin"),
        ("${UNSET#x}", ""),
    ],
)
def test_expand(word: str, result: str) -> None:
    assert expand(word, ENV) == result


def test_whitespace_is_kept_by_expand() -> None:
    assert expand("/my dir/$A", ENV) == "/my dir/a"
    assert expand("$SPACED", ENV) == "x  y"


def test_backtick_escape() -> None:
    assert expand("`$A", ENV, escape="`") == "$A"
    assert expand("c:\\dir\\$A", ENV, escape="`") == "c:\\dir\\a"
    assert expand('"a`"b"', ENV, escape="`") == 'a"b'


def test_expand_words_splits_unquoted_whitespace() -> None:
    assert expand_words("80 $SPACED '1  2' \"$A b\" c\\ d", ENV) == ["80", "x", "y", "1  2", "a b", "c d"]


def test_expand_words_drops_empty_results() -> None:
    assert expand_words("$EMPTY a $UNSET", ENV) == ["a"]
    assert expand_words('""', ENV) == []


def test_error_unset_with_question_mark() -> None:
    with pytest.raises(ExpansionError) as info:
        expand("${UNSET:?must be set}", ENV)
    assert str(info.value) == 'failed to process "${UNSET:?must be set}": UNSET: must be set'


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("${UNSET?}", "UNSET: is not allowed to be unset"),
        ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
        ("${A", "missing '}'"),
        ("${A:-x", "missing '}'"),
        ("${", "missing '}'"),
        ("${}", "bad substitution"),
        ("${:x}", "bad substitution"),
        ("${A:x}", "unsupported modifier (:x)"),
        ("${A:#x}", "unsupported modifier (:#)"),
        ("${A*}", "unsupported modifier (*)"),
        ("'open", "matching single-quote"),
        ('"open', "matching double-quote"),
        ("${P/x", "missing '/'"),
    ],
)
def test_errors(word: str, message: str) -> None:
    with pytest.raises(ExpansionError) as info:
        expand(word, ENV)
    assert message in info.value.message


def test_question_mark_passes_when_set_even_if_empty() -> None:
    assert expand("${EMPTY?}", ENV) == ""
