"""Receiving files: safe names, no escape from the download directory, resume, full disks.

Everything runs on real files in temporary directories (and a real tmpfs for the
full-disk cases); nothing is mocked.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import securechat.client.downloads
import securechat.client.filenames
from securechat.client.downloads import Download, DownloadError
from securechat.client.filenames import MAX_NAME_BYTES, safe_name
from securechat.errors import SecureChatError

CHUNK = 64 * 1024
UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def partial_name(data: bytes) -> str:
    return f".securechat-{sha(data)}.part"


def receive(directory: Path, name: str, content: bytes, *, chunk: int = CHUNK) -> Path:
    """Receive ``content`` as ``name`` in chunks, the way the client does."""
    with Download.start(directory, name=name, size=len(content), sha256=sha(content)) as download:
        for start in range(download.offset, len(content), chunk):
            download.write(start, content[start : start + chunk])
        return download.finish()


def tree(root: Path) -> dict[str, bytes | str | None]:
    """Every entry under ``root``: file bytes, symlink targets, None for directories."""
    entries: dict[str, bytes | str | None] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            entries[key] = "-> " + os.readlink(path)
        elif path.is_dir():
            entries[key] = None
        else:
            entries[key] = path.read_bytes()
    return entries


# -- the module's surface ---------------------------------------------------------------


def test_modules_export_exactly_their_public_api() -> None:
    assert set(securechat.client.downloads.__all__) == {"Download", "DownloadError"}
    assert set(securechat.client.filenames.__all__) == {
        "MAX_NAME_BYTES",
        "numbered_name",
        "safe_name",
    }


def test_download_error_is_a_securechat_error_with_a_reason() -> None:
    error = DownloadError("the disk is full")
    assert isinstance(error, SecureChatError)
    assert error.reason == "the disk is full"
    assert str(error) == "the disk is full"


# -- safe_name ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../x", "x"),
        ("/etc/passwd", "passwd"),
        ("C:\\evil\\x.txt", "x.txt"),
        ("..\\..\\x.txt", "x.txt"),
        ("dir/", "dir"),
        ("..", "file"),
        (".", "file"),
        ("", "file"),
        ("/", "file"),
        ("...", "file"),
        (".bashrc", "bashrc"),
        ("-rf", "rf"),
        ("--help", "help"),
        (" spaced.txt ", "spaced.txt"),
        ("name.txt. . ", "name.txt"),
        ("a\x00b.txt", "a_b.txt"),
        ("a\x1b[31mb.txt", "a_[31mb.txt"),
        ("a\nb.txt", "a_b.txt"),
        ("a\x85b.txt", "a_b.txt"),  # C1 next line
        ("invoice\u202efdp.exe", "invoice_fdp.exe"),  # RLO would show "exe.pdf"
        ("zero\u200bwidth.txt", "zero_width.txt"),
        ("line\u2028sep.txt", "line_sep.txt"),
        ("private\ue000.txt", "private_.txt"),
        ("报告 📄.pdf", "报告 📄.pdf"),
        ("café.txt", "café.txt"),
        ("cafe\u0301.txt", "caf\u00e9.txt"),  # NFC: e + combining acute -> é
    ],
)
def test_safe_name_table(offered: str, expected: str) -> None:
    assert safe_name(offered) == expected


@pytest.mark.parametrize("stem_char", ["a", "é", "日", "📄"])
def test_long_name_is_shortened_but_keeps_its_extension(stem_char: str) -> None:
    name = safe_name(stem_char * 300 + ".pdf")
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert name.endswith(".pdf")
    assert name.startswith(stem_char)


def test_long_name_without_extension_is_cut_at_a_character_boundary() -> None:
    name = safe_name("日" * 300)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert set(name) == {"日"}


def test_long_name_is_not_left_with_a_trailing_dot() -> None:
    name = safe_name("a" * (MAX_NAME_BYTES - 1) + ". b c")
    assert not name.endswith((".", " "))


names = st.one_of(
    st.text(st.characters(exclude_categories=())),  # includes lone surrogates
    st.lists(
        st.sampled_from(
            ["/", "\\", ".", "..", "-", " ", "a", "é", "e\u0301", "\x00", "\u202e", "日" * 40]
        )
    ).map("".join),
)


@given(names)
def test_safe_name_is_always_a_harmless_basename(offered: str) -> None:
    name = safe_name(offered)
    assert name
    assert name not in (".", "..")
    assert "/" not in name
    assert "\\" not in name
    assert not name.startswith((".", "-"))
    assert not any(unicodedata.category(ch) in UNSAFE_CATEGORIES for ch in name)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert unicodedata.is_normalized("NFC", name)
    assert safe_name(name) == name


@settings(max_examples=50, deadline=None)
@given(offered=names)
def test_any_offered_name_is_saved_inside_the_download_directory(
    tmp_path_factory: pytest.TempPathFactory, offered: str
) -> None:
    root = tmp_path_factory.mktemp("root")
    directory = root / "a" / "b" / "downloads"
    saved = receive(directory, offered, b"payload")
    assert saved.resolve().parent == directory.resolve()
    assert saved.name == safe_name(offered)
    assert saved.read_bytes() == b"payload"
    assert {p.name for p in root.rglob("*") if p.is_file()} == {saved.name}


# -- a whole transfer -----------------------------------------------------------------


def test_chunked_transfer_lands_byte_identical_under_the_offered_name(tmp_path: Path) -> None:
    content = os.urandom(5 * CHUNK + 123)
    saved = receive(tmp_path / "dl", "report.pdf", content)
    assert saved == tmp_path / "dl" / "report.pdf"
    assert saved.read_bytes() == content
    assert os.listdir(tmp_path / "dl") == ["report.pdf"]


def test_empty_file_is_received(tmp_path: Path) -> None:
    saved = receive(tmp_path, "empty.txt", b"")
    assert saved.read_bytes() == b""


def test_missing_download_directory_is_created_private(tmp_path: Path) -> None:
    directory = tmp_path / "x" / "y" / "dl"
    receive(directory, "a.txt", b"a")
    assert stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0


def test_saved_file_is_private_to_the_user(tmp_path: Path) -> None:
    saved = receive(tmp_path, "a.txt", b"a")
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600


def test_second_identical_download_gets_a_numbered_name(tmp_path: Path) -> None:
    first = receive(tmp_path, "report.pdf", b"one")
    second = receive(tmp_path, "report.pdf", b"one")
    third = receive(tmp_path, "report.pdf", b"one")
    assert (first.name, second.name, third.name) == (
        "report.pdf",
        "report (1).pdf",
        "report (2).pdf",
    )
    assert first.read_bytes() == second.read_bytes() == third.read_bytes() == b"one"


def test_numbered_name_of_a_long_name_stays_within_the_limit(tmp_path: Path) -> None:
    offered = "日" * 300 + ".pdf"
    receive(tmp_path, offered, b"one")
    second = receive(tmp_path, offered, b"two")
    assert second.name.endswith(" (1).pdf")
    assert len(second.name.encode("utf-8")) <= MAX_NAME_BYTES


def test_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_bytes(b"mine")
    saved = receive(tmp_path, "notes.txt", b"theirs")
    assert saved.name == "notes (1).txt"
    assert (tmp_path / "notes.txt").read_bytes() == b"mine"
    assert saved.read_bytes() == b"theirs"


@pytest.mark.parametrize("target_exists", [True, False])
def test_symlink_at_the_final_name_is_not_followed(tmp_path: Path, target_exists: bool) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "target.txt"
    if target_exists:
        target.write_bytes(b"original")
    directory = tmp_path / "dl"
    directory.mkdir()
    (directory / "x.txt").symlink_to(target)

    saved = receive(directory, "x.txt", b"hostile")

    assert saved.name == "x (1).txt"
    assert saved.read_bytes() == b"hostile"
    assert (directory / "x.txt").is_symlink()
    assert tree(outside) == ({"target.txt": b"original"} if target_exists else {})


def test_symlink_at_the_partial_name_is_refused_and_not_followed(tmp_path: Path) -> None:
    content = b"short"
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "victim"
    target.write_bytes(b"longer than the offered file, so a followed open would truncate it")
    directory = tmp_path / "dl"
    directory.mkdir()
    (directory / partial_name(content)).symlink_to(target)

    with pytest.raises(DownloadError, match="symbolic link"):
        Download.start(directory, name="a.txt", size=len(content), sha256=sha(content))

    assert target.read_bytes().startswith(b"longer than")
    assert tree(outside) == {"victim": target.read_bytes()}


def test_hard_link_at_the_partial_name_is_refused_and_left_untouched(tmp_path: Path) -> None:
    content = b"short"
    victim = tmp_path / "victim"
    victim.write_bytes(b"a file of the user's that someone linked into the download directory")
    before = victim.read_bytes()
    directory = tmp_path / "dl"
    directory.mkdir()
    os.link(victim, directory / partial_name(content))

    with pytest.raises(DownloadError, match="other links"):
        Download.start(directory, name="a.txt", size=len(content), sha256=sha(content))

    assert victim.read_bytes() == before


def test_fifo_at_the_partial_name_is_refused_without_hanging(tmp_path: Path) -> None:
    content = b"data"
    os.mkfifo(tmp_path / partial_name(content))
    with pytest.raises(DownloadError, match="not a regular file"):
        Download.start(tmp_path, name="a.txt", size=len(content), sha256=sha(content))


@pytest.mark.parametrize(
    "offered",
    [
        "../../escape.txt",
        "..\\..\\escape.txt",
        "../../../../../../../../tmp/escape.txt",
        "/etc/cron.d/escape",
        "ABSOLUTE",  # replaced by an absolute path inside tmp_path below
        "..",
        "escape\x00.txt",
        "\x1b]0;owned\x07.txt",
        "../\u202etxt.exe",
    ],
)
def test_hostile_name_creates_nothing_outside_the_download_directory(
    tmp_path: Path, offered: str
) -> None:
    if offered == "ABSOLUTE":
        offered = str(tmp_path / "escape.txt")
    directory = tmp_path / "a" / "b" / "dl"
    directory.mkdir(parents=True)
    (tmp_path / "a" / "keep.txt").write_bytes(b"keep")
    before = tree(tmp_path)

    saved = receive(directory, offered, b"hostile")

    assert saved.parent == directory
    after = tree(tmp_path)
    new = {key for key in after if key not in before}
    assert new == {str(saved.relative_to(tmp_path))}
    assert {key: after[key] for key in before} == before


# -- limits, order and integrity ------------------------------------------------------


def test_more_bytes_than_offered_raises_and_removes_the_partial(tmp_path: Path) -> None:
    content = b"0123456789"
    download = Download.start(tmp_path, name="a.txt", size=len(content), sha256=sha(content))
    download.write(0, content[:6])
    with pytest.raises(DownloadError, match="more bytes than offered"):
        download.write(6, b"6789!")
    assert os.listdir(tmp_path) == []


def test_out_of_order_chunk_raises(tmp_path: Path) -> None:
    content = b"0123456789"
    download = Download.start(tmp_path, name="a.txt", size=len(content), sha256=sha(content))
    download.write(0, content[:4])
    with pytest.raises(DownloadError, match="chunk out of order: expected offset 4, got 6"):
        download.write(6, content[6:])
    with pytest.raises(DownloadError, match="already ended"):
        download.write(4, content[4:])


def test_sha256_mismatch_saves_nothing_and_leaves_no_partial(tmp_path: Path) -> None:
    offered = b"the real file"
    download = Download.start(tmp_path, name="a.txt", size=len(offered), sha256=sha(offered))
    download.write(0, b"a fake  file")
    download.write(12, b"!")
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        download.finish()
    assert os.listdir(tmp_path) == []


def test_incomplete_finish_raises_and_keeps_the_partial_for_a_resume(tmp_path: Path) -> None:
    content = b"0123456789"
    download = Download.start(tmp_path, name="a.txt", size=len(content), sha256=sha(content))
    download.write(0, content[:5])
    with pytest.raises(DownloadError, match="incomplete: got 5 of 10 bytes"):
        download.finish()
    assert os.listdir(tmp_path) == [partial_name(content)]


def test_resume_continues_from_the_bytes_already_on_disk(tmp_path: Path) -> None:
    content = os.urandom(3 * CHUNK)
    half = len(content) // 2
    first = Download.start(tmp_path, name="big.bin", size=len(content), sha256=sha(content))
    first.write(0, content[:half])
    first.abort(keep_partial=True)

    second = Download.start(tmp_path, name="big.bin", size=len(content), sha256=sha(content))
    assert second.offset == half
    second.write(half, content[half:])
    saved = second.finish()

    assert saved.read_bytes() == content
    assert os.listdir(tmp_path) == ["big.bin"]


def test_leaving_the_context_keeps_the_partial_for_a_resume(tmp_path: Path) -> None:
    content = b"0123456789"
    with Download.start(tmp_path, name="a.txt", size=10, sha256=sha(content)) as download:
        download.write(0, content[:3])
    assert receive(tmp_path, "a.txt", content).read_bytes() == content


def test_resumed_bytes_that_were_corrupted_are_caught_by_the_final_hash(tmp_path: Path) -> None:
    content = b"0123456789"
    (tmp_path / partial_name(content)).write_bytes(b"XXXXX")
    download = Download.start(tmp_path, name="a.txt", size=len(content), sha256=sha(content))
    assert download.offset == 5
    download.write(5, content[5:])
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        download.finish()
    assert os.listdir(tmp_path) == []


def test_stale_partial_longer_than_the_offer_is_discarded(tmp_path: Path) -> None:
    content = b"0123456789"
    (tmp_path / partial_name(content)).write_bytes(b"stale" * 10)
    download = Download.start(tmp_path, name="a.txt", size=len(content), sha256=sha(content))
    assert download.offset == 0
    download.write(0, content)
    assert download.finish().read_bytes() == content


def test_abort_removes_the_partial(tmp_path: Path) -> None:
    content = b"0123456789"
    download = Download.start(tmp_path, name="a.txt", size=len(content), sha256=sha(content))
    download.write(0, content[:3])
    download.abort()
    download.abort()  # a second abort does nothing
    assert os.listdir(tmp_path) == []


def test_abort_from_another_thread_ends_the_download(tmp_path: Path) -> None:
    content = os.urandom(4 * CHUNK)
    download = Download.start(tmp_path, name="a.bin", size=len(content), sha256=sha(content))
    download.write(0, content[:CHUNK])
    canceller = threading.Thread(target=download.abort)
    canceller.start()
    canceller.join()
    with pytest.raises(DownloadError, match="already ended"):
        download.write(CHUNK, content[CHUNK : 2 * CHUNK])
    assert os.listdir(tmp_path) == []


def test_same_file_cannot_be_received_twice_at_once(tmp_path: Path) -> None:
    content = b"0123456789"
    with Download.start(tmp_path, name="a.txt", size=10, sha256=sha(content)) as first:
        with pytest.raises(DownloadError, match="already being received"):
            Download.start(tmp_path, name="b.txt", size=10, sha256=sha(content))
        first.write(0, content)
        assert first.finish().read_bytes() == content


def test_no_file_descriptor_is_left_open_on_any_path(tmp_path: Path) -> None:
    content = b"0123456789"
    before = set(os.listdir("/proc/self/fd"))

    receive(tmp_path, "ok.txt", content)
    for bad_write in [(3, content), (0, content + b"!")]:
        download = Download.start(tmp_path, name="a.txt", size=10, sha256=sha(content))
        with pytest.raises(DownloadError):
            download.write(*bad_write)
    for written in [content[:5], b"X" * 10]:
        download = Download.start(tmp_path, name="a.txt", size=10, sha256=sha(content))
        download.write(download.offset, written[download.offset :])
        with pytest.raises(DownloadError):
            download.finish()
    (tmp_path / partial_name(b"link")).symlink_to(tmp_path / "ok.txt")
    with pytest.raises(DownloadError):
        Download.start(tmp_path, name="a.txt", size=4, sha256=sha(b"link"))

    assert set(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize(
    ("size", "digest"),
    [
        (-1, "0" * 64),
        (10, "0" * 63),
        (10, "A" * 64),
        (10, "0" * 64 + "\n"),
        (10, "../../" + "0" * 58),
    ],
)
def test_invalid_size_or_digest_is_refused(tmp_path: Path, size: int, digest: str) -> None:
    with pytest.raises(DownloadError):
        Download.start(tmp_path / "dl", name="a.txt", size=size, sha256=digest)
    assert os.listdir(tmp_path) == []


def test_download_directory_that_is_a_file_is_a_download_error(tmp_path: Path) -> None:
    (tmp_path / "dl").write_bytes(b"")
    with pytest.raises(DownloadError, match="cannot use download directory"):
        Download.start(tmp_path / "dl", name="a.txt", size=1, sha256="0" * 64)


# -- full disks -----------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, or a skip where mounting is not allowed."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
            capture_output=True,
            check=False,
        )
    except OSError as exc:
        pytest.skip(f"cannot run mount: {exc}")
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_offer_larger_than_the_free_space_is_refused_up_front(small_disk: Path) -> None:
    content = os.urandom(1024 * 1024)
    with pytest.raises(DownloadError, match="the disk is full"):
        Download.start(small_disk, name="big.bin", size=len(content), sha256=sha(content))
    assert os.listdir(small_disk) == []


def test_disk_filling_up_mid_transfer_raises_and_leaves_no_partial(small_disk: Path) -> None:
    first = os.urandom(200 * 1024)
    second = os.urandom(200 * 1024)
    # Both fit when offered; only one fits once the other has arrived.
    a = Download.start(small_disk, name="a.bin", size=len(first), sha256=sha(first))
    b = Download.start(small_disk, name="b.bin", size=len(second), sha256=sha(second))
    for start in range(0, len(first), CHUNK):
        a.write(start, first[start : start + CHUNK])
    assert a.finish().read_bytes() == first

    with pytest.raises(DownloadError, match="disk is full") as raised:
        for start in range(0, len(second), CHUNK):
            b.write(start, second[start : start + CHUNK])
    assert "no space left on device" in raised.value.reason
    assert os.listdir(small_disk) == ["a.bin"]
