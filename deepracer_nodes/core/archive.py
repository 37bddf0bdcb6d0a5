"""Safe extraction of a downloaded model archive, and finding the model inside it.

A model archive comes from the internet (the DeepRacer console, a forum, a friend), so
it is treated as hostile. extract_archive() writes ONLY regular files and folders,
ONLY inside a fresh target folder, and refuses the archive as a whole when any member:

- has an absolute path (/x, C:/x, //server/x) or a '..' part, or repeats an earlier name;
- is a link: symbolic AND hard links are all refused (a DeepRacer model has none, and a
  link is the classic way out of the target folder), as are devices and FIFOs;
- is encrypted (zip);
- makes the archive exceed the limits (member count, bytes per member, bytes in all).
  Sizes are checked from the headers before anything is written AND counted while the
  bytes stream out, so a header that lies cannot get past them (archive bombs); a tar is
  read as one forward stream whose decompressed bytes are capped too, so even what
  tarfile reads for itself (PAX headers) is bounded.

On any refusal or error the target folder is removed: nothing is left behind. The checks
are our own, because the car may run Python 3.10; where tarfile has the 'data' extraction
filter (3.12, backported to 3.10.12/3.11.4) it runs as a second opinion.

locate_model() then finds the model inside an extracted folder: the console's layout is
one `*.pb` (often under agent/) and a top-level model_metadata.json.

Plain Python: no ROS, no TensorFlow.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterator

from deepracer_nodes.core.metadata import METADATA_FILE_NAME

_CHUNK_BYTES = 1 << 20
_FILE_MODE = 0o644  # never executable, never setuid, whatever the archive says
_DIR_MODE = 0o755


class ArchiveError(ValueError):
    """An archive we refuse to extract, or a folder without a usable model; says why."""


@dataclass(frozen=True)
class ExtractionLimits:
    """Caps against archive bombs. A console model is 3-30 files and 5-100 MB."""

    max_members: int = 10_000
    max_member_bytes: int = 512 << 20    # 512 MiB
    max_total_bytes: int = 1 << 30       # 1 GiB

    def __post_init__(self) -> None:
        for name in ('max_members', 'max_member_bytes', 'max_total_bytes'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')


# --- member checks --------------------------------------------------------------------------

def safe_member_path(name: str) -> PurePosixPath:
    """The relative path a member may be written to; ArchiveError when it would escape.

    Backslashes count as separators too (archives made on Windows), so 'a\\..\\..\\x'
    is caught as well.
    """
    if not name or '\x00' in name:
        raise ArchiveError(f'member {name!r} has an empty or invalid name')
    unified = name.replace('\\', '/')
    if unified.startswith('/') or (len(unified) > 1 and unified[1] == ':'):
        raise ArchiveError(f'member {name!r} has an absolute path')
    parts = [part for part in unified.split('/') if part not in ('', '.')]
    if '..' in parts:
        raise ArchiveError(f"member {name!r} has a '..' in its path (it would be written "
                           'outside the target folder)')
    if not parts:
        raise ArchiveError(f'member {name!r} names no file')
    return PurePosixPath(*parts)


@dataclass(frozen=True)
class _Member:
    """What we need of a tar or zip member, once checked."""

    path: PurePosixPath
    is_dir: bool
    size: int
    open: Callable[[], BinaryIO]


class _Budget:
    """Counts members and bytes against the limits, from headers and while streaming."""

    def __init__(self, limits: ExtractionLimits) -> None:
        self.limits = limits
        self.members = 0
        self.declared_bytes = 0
        self.written_bytes = 0
        self.names: set[PurePosixPath] = set()

    def admit(self, path: PurePosixPath, declared_size: int) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveError(f'the archive has more than {self.limits.max_members} members')
        if path in self.names:
            raise ArchiveError(f'member {str(path)!r} appears twice in the archive')
        self.names.add(path)
        if declared_size > self.limits.max_member_bytes:
            raise ArchiveError(f'member {str(path)!r} is {declared_size} bytes, over the limit '
                               f'of {self.limits.max_member_bytes} per member')
        self.declared_bytes += declared_size
        if self.declared_bytes > self.limits.max_total_bytes:
            raise ArchiveError(f'the archive unpacks to more than {self.limits.max_total_bytes} '
                               'bytes')

    def count(self, path: PurePosixPath, member_bytes: int, declared_size: int,
              chunk: int) -> None:
        self.written_bytes += chunk
        if member_bytes > declared_size or member_bytes > self.limits.max_member_bytes:
            raise ArchiveError(f'member {str(path)!r} holds more bytes than its header '
                               'declares or the limit allows')
        if self.written_bytes > self.limits.max_total_bytes:
            raise ArchiveError(f'the archive unpacks to more than {self.limits.max_total_bytes} '
                               'bytes')


def _tar_members(archive: tarfile.TarFile, target: Path) -> Iterator[_Member]:
    data_filter = getattr(tarfile, 'data_filter', None)
    for info in archive:  # one pass: members are read as the stream goes
        path = safe_member_path(info.name)
        if info.issym() or info.islnk():
            raise ArchiveError(f'member {info.name!r} is a link (to {info.linkname!r}); '
                               'links are refused')
        if not (info.isreg() or info.isdir()):
            raise ArchiveError(f'member {info.name!r} is not a regular file or folder '
                               '(device, FIFO or other special file)')
        if data_filter is not None:
            try:
                data_filter(info, str(target))
            except tarfile.FilterError as error:
                raise ArchiveError(f'member {info.name!r} refused: {error}') from None

        def opener(info: tarfile.TarInfo = info) -> BinaryIO:
            stream = archive.extractfile(info)
            if stream is None:
                raise ArchiveError(f'member {info.name!r} has no data')
            return stream
        yield _Member(path, info.isdir(), 0 if info.isdir() else info.size, opener)


def _zip_members(archive: zipfile.ZipFile) -> Iterator[_Member]:
    for info in archive.infolist():
        path = safe_member_path(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ArchiveError(f'member {info.filename!r} is a link; links are refused')
        if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise ArchiveError(f'member {info.filename!r} is not a regular file or folder')
        if info.flag_bits & 0x1:
            raise ArchiveError(f'member {info.filename!r} is encrypted')
        yield _Member(path, info.is_dir(), 0 if info.is_dir() else info.file_size,
                      lambda info=info: archive.open(info))


def _write_member(member: _Member, target: Path, budget: _Budget) -> None:
    destination = target.joinpath(*member.path.parts)
    # Belt and braces: the resolved path must still be inside the target folder.
    resolved_target = target.resolve()
    if resolved_target not in destination.resolve().parents and \
            destination.resolve() != resolved_target:
        raise ArchiveError(f'member {str(member.path)!r} resolves outside the target folder')
    if member.is_dir:
        destination.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        return
    destination.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    written = 0
    # O_EXCL: never write through anything that already exists at that path.
    descriptor = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    with os.fdopen(descriptor, 'wb') as out, member.open() as source:
        while True:
            chunk = source.read(_CHUNK_BYTES)
            if not chunk:
                break
            written += len(chunk)
            budget.count(member.path, written, member.size, len(chunk))
            out.write(chunk)


# Compressed tar streams by their first bytes (tarfile's own detection would decompress).
_COMPRESSIONS = ((b'\x1f\x8b', 'gz'), (b'BZh', 'bz2'), (b'\xfd7zXZ\x00', 'xz'))
_TAR_MAGIC_OFFSET = 257  # 'ustar' in the first header of every POSIX/GNU tar


def archive_kind(path: Path) -> str:
    """'zip', 'tar' or a compressed tar ('gz', 'bz2', 'xz'); ArchiveError for anything else.

    Decided from the first bytes only: nothing is decompressed to find out.
    """
    if not path.is_file():
        raise ArchiveError(f'{path} is not a file')
    if zipfile.is_zipfile(path):
        return 'zip'
    with path.open('rb') as stream:
        head = stream.read(_TAR_MAGIC_OFFSET + 5)
    for magic, kind in _COMPRESSIONS:
        if head.startswith(magic):
            return kind
    if head[_TAR_MAGIC_OFFSET:] == b'ustar':
        return 'tar'
    raise ArchiveError(f'{path} is not a tar (.tar.gz, .tgz, .tar) or zip archive')


class _CappedStream(io.RawIOBase):
    """The decompressed tar stream, refusing to yield more than cap bytes in all.

    This bounds what tarfile itself reads between and inside headers (a PAX header or
    padding bomb is held in memory by tarfile before we ever see a member)."""

    def __init__(self, stream: BinaryIO, cap: int, raw: BinaryIO) -> None:
        super().__init__()
        self._stream, self._cap, self._count, self._raw = stream, cap, 0, raw

    def close(self) -> None:
        # The decompressors do not close a file object they were given.
        self._stream.close()
        self._raw.close()
        super().close()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._count += len(data)
        if self._count > self._cap:
            raise ArchiveError(f'the archive unpacks to more than {self._cap} bytes '
                               '(headers included)')
        return data


def _open_tar_stream(path: Path, kind: str, limits: ExtractionLimits) -> _CappedStream:
    # Room for each member's header and padding beyond its data, and the end blocks.
    cap = limits.max_total_bytes + limits.max_members * 1024 + (64 << 10)
    openers = {'gz': lambda raw: gzip.GzipFile(fileobj=raw, mode='rb'),
               'bz2': bz2.BZ2File, 'xz': lzma.LZMAFile}
    raw = path.open('rb')
    try:
        return _CappedStream(openers[kind](raw) if kind in openers else raw, cap, raw)
    except BaseException:
        raw.close()
        raise


def extract_archive(archive_path: str | Path, target: str | Path,
                    limits: ExtractionLimits = ExtractionLimits()) -> list[PurePosixPath]:
    """Extract into target (created; must not exist) and return the files written.

    Raises ArchiveError and leaves no target folder behind when anything is refused.
    """
    archive_path, target = Path(archive_path), Path(target)
    kind = archive_kind(archive_path)
    target.mkdir(mode=_DIR_MODE)  # FileExistsError for an existing target: never merge
    budget = _Budget(limits)
    written: list[PurePosixPath] = []
    try:
        if kind == 'zip':
            with zipfile.ZipFile(archive_path) as archive:
                if len(archive.infolist()) > limits.max_members:
                    raise ArchiveError(f'the archive has more than {limits.max_members} members')
                _extract_members(_zip_members(archive), target, budget, written)
        else:
            with _open_tar_stream(archive_path, kind, limits) as stream, \
                    tarfile.open(fileobj=stream, mode='r|') as archive:
                # Stream mode: one forward pass, no seeking back through the decompressor.
                _extract_members(_tar_members(archive, target), target, budget, written)
    except BaseException as error:
        shutil.rmtree(target, ignore_errors=True)
        if isinstance(error, ArchiveError):
            raise
        if isinstance(error, Exception):
            # Truncated or corrupt streams, CRC errors, zlib/lzma errors, a full disk: the
            # decompressors raise many unrelated types, and each means this archive failed.
            raise ArchiveError(f'cannot extract {archive_path.name}: '
                               f'{type(error).__name__}: {error}') from None
        raise
    return written


def _extract_members(members: Iterator[_Member], target: Path, budget: _Budget,
                     written: list[PurePosixPath]) -> None:
    for member in members:
        budget.admit(member.path, member.size)
        _write_member(member, target, budget)
        if not member.is_dir:
            written.append(member.path)


# --- finding the model in an extracted folder -----------------------------------------------

@dataclass(frozen=True)
class FoundModel:
    """The files of a model inside a folder: an ONNX graph or a TensorFlow frozen graph."""

    model_file: Path
    metadata_file: Path
    is_onnx: bool


def _names(paths: list[Path], root: Path) -> str:
    return ', '.join(str(p.relative_to(root)) for p in paths)


def _find_metadata(folder: Path) -> Path:
    top = folder / METADATA_FILE_NAME
    if top.is_file():
        return top
    # Tolerated: an archive that wraps everything in one folder puts it one level down.
    one_down = sorted(p for p in folder.glob(f'*/{METADATA_FILE_NAME}') if p.is_file())
    if len(one_down) == 1:
        return one_down[0]
    if len(one_down) > 1:
        raise ArchiveError(f'several {METADATA_FILE_NAME} one folder down, which one is '
                           f'meant: {_names(one_down, folder)}')
    deeper = sorted(p for p in folder.rglob(METADATA_FILE_NAME) if p.is_file())
    where = f' (found only deeper: {_names(deeper, folder)})' if deeper else ''
    raise ArchiveError(f'no {METADATA_FILE_NAME} at the top of the model or one folder '
                       f'down{where}: without it the outputs of the network mean nothing')


def locate_model(folder: str | Path) -> FoundModel:
    """The model file and metadata in folder; ArchiveError naming the files when ambiguous.

    Accepted: exactly one *.onnx anywhere (imported as is; a .pb beside it is ignored), or
    else exactly one *.pb anywhere (to convert); model_metadata.json at the top or exactly
    one folder down.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ArchiveError(f'{folder} is not a folder')
    onnx_files = sorted(p for p in folder.rglob('*.onnx') if p.is_file())
    graphs = sorted(p for p in folder.rglob('*.pb') if p.is_file())
    if len(onnx_files) > 1:
        raise ArchiveError(f'several ONNX models, which one is meant: '
                           f'{_names(onnx_files, folder)}')
    if onnx_files:
        return FoundModel(onnx_files[0], _find_metadata(folder), is_onnx=True)
    if len(graphs) > 1:
        raise ArchiveError(f'several TensorFlow graphs (.pb), which one is meant: '
                           f'{_names(graphs, folder)}')
    if not graphs:
        raise ArchiveError('no model inside: neither a .onnx nor a TensorFlow .pb file')
    return FoundModel(graphs[0], _find_metadata(folder), is_onnx=False)
